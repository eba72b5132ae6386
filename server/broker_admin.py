"""Station credentials in Mosquitto's dynamic security plugin ("dynsec").

Every station is one dynsec *client* (username = station id) holding one *role* of its own,
``station-<station_id>``, whose ACLs name that station's topics literally. (Mosquitto 2.0's
dynsec does not substitute ``%u`` in ACL topics, so a shared role with patterns would not
work; literal per-station roles also make the rules readable with ``getRole``.)

Each station's client is also bound to one MQTT client id, its station id (dynsec's
``clientid``, honoured by Mosquitto 2.0.11): the broker refuses the station's credentials with
any other client id. Without it, a station could connect with another station's client id (or
an ingest worker's) and the broker would close that other session: one stolen Pi could keep a
site offline. Station ids never start with ``swabline-``, so no station can take the server's,
the ingest workers' or the admin's client ids either.

The server changes credentials by publishing commands on ``$CONTROL/dynamic-security/v1`` as
a dedicated broker-admin user whose only rights are that control topic (it cannot read or write
station traffic). Changes take effect at once, without restarting the broker, and Mosquitto
disconnects a client whose password is changed, who is disabled or who is deleted
("Administrative action"): a revoked station cannot even finish its current session.

The initial configuration file (server and admin users, the server role, default deny) is
written by ``initial_config``; see ``docs/broker.md``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from protocol.topics import (
    STATION_PUBLISHES,
    STATION_RECEIVES,
    TOPIC_ROOT,
    check_station_id,
    topic,
)
from server.errors import BrokerAdminError

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
SERVER_ROLE = "swabline-server"
ADMIN_ROLE = "swabline-broker-admin"
DEFAULT_SERVER_USER = "swabline-server"
DEFAULT_ADMIN_USER = "swabline-admin"
RESERVED_PREFIX = "swabline-"
"""Station ids may not start with this: it is kept for the server's and the admin's users."""

_PBKDF2_ITERATIONS = 101  # what mosquitto_ctrl and mosquitto_passwd write; a random 32-byte
# password does not need key stretching, and a higher count slows every CONNECT.


def station_role(station_id: str) -> str:
    return f"station-{check_station_id(station_id)}"


def station_client(station_id: str, password: str) -> dict[str, Any]:
    """A station's dynsec client as the configuration file holds it: bound to its role and to
    the client id the agent uses (its station id)."""
    return {
        "username": station_id,
        "clientid": station_id,
        **hashed_password(password),
        "roles": [{"rolename": station_role(station_id)}],
    }


def bind_station_client_ids(data: dict[str, Any]) -> list[str]:
    """Bind every station client of a dynsec file (``data``, changed in place) that is not
    bound yet to its station id as client id; returns the station ids bound.

    For files written before the binding existed: a station client is one holding its own
    ``station-<username>`` role.
    """
    bound = []
    for client in data.get("clients", []):
        username = client.get("username", "")
        if client.get("clientid") or username.startswith(RESERVED_PREFIX):
            continue
        roles = {r.get("rolename") for r in client.get("roles", [])}
        if f"station-{username}" in roles:
            client["clientid"] = username
            bound.append(username)
    return bound


def station_acls(station_id: str) -> list[dict[str, Any]]:
    """The dynsec ACLs of one station: its own topics, literally, and nothing else."""
    acls: list[dict[str, Any]] = [
        {"acltype": "publishClientSend", "topic": topic(station_id, kind), "allow": True}
        for kind in STATION_PUBLISHES
    ]
    for kind in STATION_RECEIVES:
        t = topic(station_id, kind)
        acls.append({"acltype": "subscribeLiteral", "topic": t, "allow": True})
        acls.append({"acltype": "publishClientReceive", "topic": t, "allow": True})
    return acls


def server_acls() -> list[dict[str, Any]]:
    every = f"{TOPIC_ROOT}/#"
    return [
        {"acltype": "publishClientSend", "topic": every, "allow": True},
        {"acltype": "publishClientReceive", "topic": every, "allow": True},
        {"acltype": "subscribePattern", "topic": every, "allow": True},
        # Mosquitto 2.0's dynsec checks a shared subscription with its $share/<group>/ prefix.
        {"acltype": "subscribePattern", "topic": f"$share/+/{every}", "allow": True},
    ]


def admin_acls() -> list[dict[str, Any]]:
    control = "$CONTROL/dynamic-security/#"
    return [
        {"acltype": "publishClientSend", "topic": control, "allow": True},
        {"acltype": "publishClientReceive", "topic": control, "allow": True},
        {"acltype": "subscribePattern", "topic": control, "allow": True},
    ]


def hashed_password(password: str) -> dict[str, Any]:
    """A password as dynsec stores it: PBKDF2-SHA512 over a 12-byte salt, base64."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _PBKDF2_ITERATIONS,
    }


def initial_config(
    *,
    server_password: str,
    admin_password: str,
    stations: Mapping[str, str] | None = None,
    server_user: str = DEFAULT_SERVER_USER,
    admin_user: str = DEFAULT_ADMIN_USER,
) -> dict[str, Any]:
    """The dynsec configuration file a new broker starts from. Nothing is allowed by default."""
    clients: list[dict[str, Any]] = [
        {
            "username": admin_user,
            **hashed_password(admin_password),
            "roles": [{"rolename": ADMIN_ROLE}],
        },
        {
            "username": server_user,
            **hashed_password(server_password),
            "roles": [{"rolename": SERVER_ROLE}],
        },
    ]
    roles: list[dict[str, Any]] = [
        {"rolename": ADMIN_ROLE, "acls": admin_acls()},
        {"rolename": SERVER_ROLE, "acls": server_acls()},
    ]
    for station_id, password in (stations or {}).items():
        check_enrollable(station_id)
        clients.append(station_client(station_id, password))
        roles.append({"rolename": station_role(station_id), "acls": station_acls(station_id)})
    return {
        "clients": clients,
        "groups": [],
        "roles": roles,
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


def check_enrollable(station_id: str) -> str:
    """A valid station id that does not collide with the server's or the admin's users."""
    check_station_id(station_id)
    if station_id.startswith(RESERVED_PREFIX):
        raise BrokerAdminError(
            f"station id {station_id!r}: the prefix {RESERVED_PREFIX!r} is reserved"
        )
    return station_id


class DynsecBrokerAdmin:
    """Adds, changes and revokes station credentials on a running Mosquitto.

    Wiring: connects (MQTT 5, clean session) to ``host:port`` as the broker-admin user, over TLS
    when ``ca_file`` is given; the server uses the loopback listener. One connection per
    ``with`` block; each call waits for the plugin's answer (matched by correlation data) and
    raises ``BrokerAdminError`` with the plugin's reason when a command fails.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str | None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._host, self._port, self._timeout = host, port, timeout_s
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        self._answered = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._refused: str | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"swabline-admin-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(username, password)
        if ca_file:
            client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client
        self._open = False

    def __enter__(self) -> DynsecBrokerAdmin:
        self.connect()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise BrokerAdminError(
                f"cannot reach the broker at {self._host}:{self._port}: {exc}"
            ) from exc
        self._client.loop_start()
        self._open = True
        if not self._connected.wait(self._timeout):
            self.close()
            raise BrokerAdminError(
                f"the broker at {self._host}:{self._port} did not accept the admin connection"
                + (f": {self._refused}" if self._refused else "")
            )

    def close(self) -> None:
        if self._open:
            self._open = False
            self._client.disconnect()
            self._client.loop_stop()

    def execute(
        self, *commands: dict[str, Any], tolerate: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Send ``commands`` in one message; return each command's answer, in order.

        An answer with an ``error`` raises ``BrokerAdminError`` unless the error text is in
        ``tolerate`` (e.g. "Client not found" when revoking twice).
        """
        if not self._connected.is_set():
            raise BrokerAdminError("not connected to the broker")
        tagged = []
        for c in commands:
            tagged.append({**c, "correlationData": uuid.uuid4().hex})
        info = self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerAdminError(f"cannot send to the broker: {mqtt.error_string(info.rc)}")
        wanted = [c["correlationData"] for c in tagged]
        with self._answered:
            ok = self._answered.wait_for(
                lambda: all(w in self._answers for w in wanted), timeout=self._timeout
            )
            answers = [self._answers.pop(w) for w in wanted if w in self._answers]
        if not ok:
            raise BrokerAdminError(
                "the broker did not answer: is the dynamic security plugin loaded, and does "
                "the admin user have the control topic?"
            )
        for cmd, answer in zip(commands, answers, strict=True):
            error = answer.get("error")
            if error and error not in tolerate:
                raise BrokerAdminError(f"broker refused {cmd['command']}: {error}")
        return answers

    # -- station credentials -------------------------------------------------------------

    def station_exists(self, station_id: str) -> bool:
        return self._client_info(check_station_id(station_id)) is not None

    def _client_info(self, username: str) -> dict[str, Any] | None:
        answer = self.execute(
            {"command": "getClient", "username": username}, tolerate=("Client not found",)
        )[0]
        if "error" in answer:
            return None
        client: dict[str, Any] = answer.get("data", {}).get("client", {})
        return client

    def put_station(self, station_id: str, password: str) -> None:
        """Create the station's client and role, or give an existing one a new password.

        Either way the client is bound to the client id ``station_id``. A new password
        disconnects a session still using the old one at once.
        """
        check_enrollable(station_id)
        role = station_role(station_id)
        self.execute(
            {"command": "createRole", "rolename": role, "acls": station_acls(station_id)},
            tolerate=("Role already exists",),
        )
        existing = self._client_info(station_id)
        if existing is not None:
            commands: list[dict[str, Any]] = [
                {"command": "setClientPassword", "username": station_id, "password": password},
                {"command": "setClientId", "username": station_id, "clientid": station_id},
                {"command": "enableClient", "username": station_id},
            ]
            if role not in {r.get("rolename") for r in existing.get("roles", [])}:
                commands.append(
                    {"command": "addClientRole", "username": station_id, "rolename": role}
                )
            self.execute(*commands)
        else:
            self.execute(
                {
                    "command": "createClient",
                    "username": station_id,
                    "clientid": station_id,
                    "password": password,
                    "roles": [{"rolename": role}],
                }
            )

    def remove_station(self, station_id: str) -> None:
        """Revoke a station: its client and role are deleted and its session is closed."""
        check_station_id(station_id)
        self.execute(
            {"command": "deleteClient", "username": station_id},
            {"command": "deleteRole", "rolename": station_role(station_id)},
            tolerate=("Client not found", "Role not found"),
        )

    def list_clients(self) -> list[str]:
        answer = self.execute({"command": "listClients", "verbose": False, "count": -1})[0]
        return [str(c) for c in answer.get("data", {}).get("clients", [])]

    # -- paho callbacks ------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)
        # The SUBACK may trail the first command; the plugin answers after processing, and
        # MQTT orders our SUBSCRIBE before our PUBLISH on one connection.
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with self._answered:
            for answer in body.get("responses", []):
                corr = answer.get("correlationData")
                if isinstance(corr, str):
                    self._answers[corr] = answer
            self._answered.notify_all()
