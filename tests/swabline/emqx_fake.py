"""A stand-in for EMQX 5's management API, for the tests (EMQX cannot run on this machine).

A real HTTP server on loopback that implements just the endpoints Swabline calls, with the
status codes, bodies and checks EMQX 5 documents (``emqx_authn_api``,
``emqx_authz_api_mnesia``, ``emqx_mgmt_api_clients``):

- ``POST   /api/v5/authentication/password_based:built_in_database/users`` ->
  201 ``{user_id, is_superuser}``; 409 ``ALREADY_EXISTS`` "User already exists"; 400 when
  ``user_id`` or ``password`` is missing;
- ``GET|PUT|DELETE .../users/{user_id}`` -> 200 / 200 / 204, 404 ``NOT_FOUND`` "User not
  found"; PUT needs ``password`` or ``is_superuser``;
- ``PUT    /api/v5/authorization/sources/built_in_database/rules/users/{username}`` with
  ``{username, rules}`` (the body's username must be the path's) -> 204;
  ``GET`` -> 200 ``{username, rules}``, ``DELETE`` -> 204, both 404 when there are none;
- ``DELETE /api/v5/clients/{clientid}`` -> 204, 404 ``CLIENTID_NOT_FOUND``;
- every call needs HTTP Basic credentials of an API key, else 401 ``BAD_API_KEY_OR_SECRET``.

Besides the API it plays the broker's part for the checks a test makes: ``connect`` (password
authentication, a new session takes over one with the same client id) and ``allowed`` (the
built-in database's rules, first match wins, anything unmatched denied as
``authorization.no_match = deny``).
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

USERS = ["api", "v5", "authentication", "password_based:built_in_database", "users"]
RULES = ["api", "v5", "authorization", "sources", "built_in_database", "rules", "users"]
CLIENTS = ["api", "v5", "clients"]
RULE_FIELDS = {"topic", "permission", "action", "qos", "retain"}


@dataclass
class FakeEmqx:
    api_key: str = "swabline-enrollment"
    api_secret: str = "s3cret"
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)  # client id -> username
    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the broker's side --------------------------------------------------------------------

    def connect(self, username: str, password: str, client_id: str | None = None) -> bool:
        """An MQTT CONNECT: accepted when the built-in database has this user and password."""
        with self.lock:
            user = self.users.get(username)
            if user is None or user["password"] != password:
                return False
            self.sessions[client_id or username] = username
            return True

    def allowed(self, username: str, action: str, topic: str) -> bool:
        for rule in self.rules.get(username, []):
            if rule["topic"] == topic and rule["action"] in (action, "all"):
                return bool(rule["permission"] == "allow")
        return False

    # -- the API ------------------------------------------------------------------------------

    def handle(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        expected = (
            "Basic " + base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        )
        if auth != expected:
            return 401, {"code": "BAD_API_KEY_OR_SECRET", "message": "Check api_key/api_secret"}
        parts = [unquote(p) for p in urlsplit(path).path.strip("/").split("/")]
        with self.lock:
            self.calls.append((method, "/" + "/".join(parts)))
            if parts == USERS and method == "POST":
                return self._create_user(body)
            if parts[:-1] == USERS and len(parts) == len(USERS) + 1:
                return self._user(method, parts[-1], body)
            if parts[:-1] == RULES and len(parts) == len(RULES) + 1:
                return self._rules(method, parts[-1], body)
            if parts[:-1] == CLIENTS and len(parts) == len(CLIENTS) + 1 and method == "DELETE":
                if self.sessions.pop(parts[-1], None) is None:
                    return 404, {"code": "CLIENTID_NOT_FOUND", "message": "Client ID not found"}
                return 204, None
        return 404, {"code": "NOT_FOUND", "message": f"no such endpoint: {method} {path}"}

    def _create_user(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or "user_id" not in body:
            return 400, {"code": "BAD_REQUEST", "message": "Missing required parameter: user_id"}
        if "password" not in body:
            return 400, {"code": "BAD_REQUEST", "message": "Missing required parameter: password"}
        user_id = body["user_id"]
        if user_id in self.users:
            return 409, {"code": "ALREADY_EXISTS", "message": "User already exists"}
        superuser = bool(body.get("is_superuser", False))
        self.users[user_id] = {"password": body["password"], "is_superuser": superuser}
        return 201, {"user_id": user_id, "is_superuser": superuser}

    def _user(self, method: str, user_id: str, body: Any) -> tuple[int, Any]:
        user = self.users.get(user_id)
        if user is None:
            return 404, {"code": "NOT_FOUND", "message": "User not found"}
        if method == "GET":
            return 200, {"user_id": user_id, "is_superuser": user["is_superuser"]}
        if method == "PUT":
            if not isinstance(body, dict) or not {"password", "is_superuser"} & body.keys():
                return 400, {"code": "BAD_REQUEST", "message": "Missing required parameter"}
            user.update({k: body[k] for k in ("password", "is_superuser") if k in body})
            return 200, {"user_id": user_id, "is_superuser": user["is_superuser"]}
        if method == "DELETE":
            del self.users[user_id]
            return 204, None
        return 405, {"code": "METHOD_NOT_ALLOWED", "message": method}

    def _rules(self, method: str, username: str, body: Any) -> tuple[int, Any]:
        if method == "PUT":
            problem = _bad_rules(body, username)
            if problem:
                return 400, {"code": "BAD_REQUEST", "message": problem}
            self.rules[username] = list(body["rules"])
            return 204, None
        if username not in self.rules:
            return 404, {"code": "NOT_FOUND", "message": "Not Found"}
        if method == "GET":
            return 200, {"username": username, "rules": self.rules[username]}
        if method == "DELETE":
            del self.rules[username]
            return 204, None
        return 405, {"code": "METHOD_NOT_ALLOWED", "message": method}


def _bad_rules(body: Any, username: str) -> str | None:
    if not isinstance(body, dict) or body.get("username") != username:
        return "the body's username must be the path's"
    rules = body.get("rules")
    if not isinstance(rules, list):
        return "rules: an array is required"
    for rule in rules:
        if not isinstance(rule, dict) or not {"topic", "permission", "action"} <= rule.keys():
            return f"bad rule schema: {rule!r}"
        if set(rule) - RULE_FIELDS:
            return f"unknown rule fields: {sorted(set(rule) - RULE_FIELDS)}"
        if rule["permission"] not in ("allow", "deny"):
            return f"permission: {rule['permission']!r}"
        if rule["action"] not in ("publish", "subscribe", "all"):
            return f"action: {rule['action']!r}"
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._answer(400, {"code": "BAD_REQUEST", "message": "not JSON"})
            return
        status, answer = self.server.emqx.handle(
            self.command, self.path, self.headers.get("Authorization"), body
        )
        self._answer(status, answer)

    def _answer(self, status: int, body: Any) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    emqx: FakeEmqx


class FakeEmqxServer:
    """``FakeEmqx`` served on ``url`` (loopback, a free port) while the ``with`` block runs."""

    def __init__(self, emqx: FakeEmqx | None = None) -> None:
        self.emqx = emqx or FakeEmqx()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.emqx = self.emqx
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeEmqxServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
