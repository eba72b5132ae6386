"""Station credentials on an EMQX 5 cluster, through its REST API (``enrollment.broker_type =
"emqx"``): what ``server.broker_admin.DynsecBrokerAdmin`` does on Mosquitto.

A station is two entries of EMQX's built-in database, replicated to every node:

- a user of the password authenticator ``password_based:built_in_database`` (user id = station
  id = MQTT username), created with ``POST /api/v5/authentication/{id}/users`` or given a new
  password with ``PUT /api/v5/authentication/{id}/users/{user_id}``;
- its authorization rules in the ``built_in_database`` authorizer, by username
  (``PUT /api/v5/authorization/sources/built_in_database/rules/users/{username}``): exactly the
  station's dynamic-security role (``station_acls``) in EMQX's terms, so both brokers take their
  station rules from one function.

EMQX keeps a session whose user's password changes or whose user is deleted, where Mosquitto
closes it at once; so the station's session is kicked as well (``DELETE /api/v5/clients/{id}``;
the agent's client id is its station id). Revoking deletes the user, kicks the session and
deletes the rules.

Wiring: HTTPS (or HTTP on a private network) to a node's management API, authenticated with an
EMQX API key and its secret as HTTP Basic credentials; certificates are checked against the
system's CAs and, when given, the province CA. Every failure is a ``BrokerAdminError`` naming
the call and EMQX's answer. Endpoints as documented for EMQX 5 ("Use HTTP API to Manage User
Data", "Use Built-in Database" authorization, the clients API); see docs/broker-cluster.md.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from protocol.topics import check_station_id
from server.broker_admin import check_enrollable, station_acls
from server.errors import BrokerAdminError

AUTHENTICATOR_ID = "password_based:built_in_database"
_USERS = f"/api/v5/authentication/{quote(AUTHENTICATOR_ID, safe='')}/users"
_RULES = "/api/v5/authorization/sources/built_in_database/rules/users"
_CLIENTS = "/api/v5/clients"

# Dynsec ACL types and what EMQX authorizes instead. EMQX checks publishing and subscribing;
# delivering a message to a client is allowed by its subscription (dynsec's
# publishClientReceive has no counterpart).
_ACTIONS = {
    "publishClientSend": "publish",
    "subscribeLiteral": "subscribe",
    "subscribePattern": "subscribe",
}


def emqx_rules(acls: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Dynsec ACLs as EMQX authorization rules (``topic``, ``permission``, ``action``), in order."""
    rules: list[dict[str, str]] = []
    for acl in acls:
        action = _ACTIONS.get(acl["acltype"])
        if action is None:
            continue
        rule = {
            "topic": acl["topic"],
            "permission": "allow" if acl["allow"] else "deny",
            "action": action,
        }
        if rule not in rules:
            rules.append(rule)
    return rules


def station_rules(station_id: str) -> list[dict[str, str]]:
    """A station's EMQX rules: its own topics, literally, as its dynsec role has them."""
    return emqx_rules(station_acls(station_id))


class EmqxBrokerAdmin:
    """Adds, changes and revokes station credentials on an EMQX 5 cluster.

    Args:
        api_url: a node's management API, e.g. ``https://emqx1.province.internal:18083``.
        api_key: an EMQX API key (Dashboard → System → API Keys).
        api_secret: its secret.
        ca_file: a CA that signed the API's certificate, trusted besides the system's.
        timeout_s: per request.

    One HTTP connection pool per ``with`` block.
    """

    def __init__(
        self,
        *,
        api_url: str,
        api_key: str,
        api_secret: str,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._url = api_url.rstrip("/")
        self._auth = httpx.BasicAuth(api_key, api_secret)
        self._ca_file = ca_file
        self._timeout = timeout_s
        self._client: httpx.Client | None = None

    def __enter__(self) -> EmqxBrokerAdmin:
        self.connect()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        verify: ssl.SSLContext | bool = True
        if self._ca_file:
            verify = ssl.create_default_context()
            try:
                verify.load_verify_locations(self._ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise BrokerAdminError(f"cannot read the CA file {self._ca_file}: {exc}") from exc
        self._client = httpx.Client(
            base_url=self._url, auth=self._auth, timeout=self._timeout, verify=verify
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- station credentials -------------------------------------------------------------

    def put_station(self, station_id: str, password: str) -> None:
        """Create the station's user and rules, or give an existing user a new password.

        The rules are written first, so a station never holds a password without its rules. A
        session using the old password is closed.
        """
        check_enrollable(station_id)
        name = quote(station_id, safe="")
        self._call(
            "PUT", f"{_RULES}/{name}", {"username": station_id, "rules": station_rules(station_id)}
        )
        created = self._call(
            "POST",
            _USERS,
            {"user_id": station_id, "password": password, "is_superuser": False},
            tolerate=(409,),
        )
        if created == 409:  # enrolled before: a new password
            self._call("PUT", f"{_USERS}/{name}", {"password": password, "is_superuser": False})
        self._kick(station_id)

    def remove_station(self, station_id: str) -> None:
        """Revoke a station: its user goes, its session is closed, its rules are deleted."""
        check_station_id(station_id)
        name = quote(station_id, safe="")
        self._call("DELETE", f"{_USERS}/{name}", tolerate=(404,))
        self._kick(station_id)
        self._call("DELETE", f"{_RULES}/{name}", tolerate=(404,))

    def station_exists(self, station_id: str) -> bool:
        name = quote(check_station_id(station_id), safe="")
        return self._call("GET", f"{_USERS}/{name}", tolerate=(404,)) != 404

    def _kick(self, station_id: str) -> None:
        # 404: the station is not connected.
        self._call("DELETE", f"{_CLIENTS}/{quote(station_id, safe='')}", tolerate=(404,))

    def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        tolerate: tuple[int, ...] = (),
    ) -> int:
        """One API call; returns its status. A status outside 2xx and ``tolerate`` raises."""
        if self._client is None:
            raise BrokerAdminError("not connected to the EMQX API")
        try:
            answer = self._client.request(
                method, path, json=body, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise BrokerAdminError(f"cannot reach the EMQX API at {self._url}: {exc}") from exc
        status = answer.status_code
        if status in tolerate or 200 <= status < 300:
            return status
        try:
            said = answer.json()
            reason = f"{said.get('code', status)}: {said.get('message', '')}"
        except ValueError:
            reason = answer.text[:200]
        if status == 401:
            reason += " (check enrollment.broker_admin_username, the API key, and its secret)"
        raise BrokerAdminError(f"EMQX refused {method} {path}: HTTP {status} {reason}")
