"""Ops end to end: real Mosquitto, the real server and real agent processes.

A remote command goes from the API to the station and its answer comes back; a station that
dies raises an offline alert (sent to a webhook), and its return resolves it.
"""

from __future__ import annotations

import json
import signal
import threading
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from protocol.commands import RESTART_EXIT_CODE
from server import orgs, users
from server.access import system_principal
from server.auth import issue
from server.db import make_engine
from server.models import OrgKind, Role, TokenKind
from swabline.broker import Broker
from tests.integration.harness import ServerProc, start_agent, start_server, wait_for

pytestmark = pytest.mark.integration

FAST_OPS = """
[ops]
evaluate_s = 0.5
heartbeat_s = 1

[alerts.thresholds]
offline_after_s = 2

[outbound]
retry_min_s = 0.5

[outbound.alerts]
webhook_url = "{hook}"
"""


class Hook:
    """A webhook receiver on the loopback interface."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[tuple[str, str, str]]:
        return [(e["event"], e["alert"]["station_id"], e["alert"]["kind"]) for e in self.events]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


def ops_token(db_url: str) -> str:
    """A province-level ops user and its API token, made directly in the server's database."""
    engine = make_engine(db_url)
    with Session(engine) as db:
        root = system_principal("test")
        province = orgs.create(
            db, root, code="HCM", name="TP. Hồ Chí Minh", kind=OrgKind.PROVINCE, parent=None,
            facility_kind=None,
        )  # fmt: skip
        user = users.create(
            db,
            root,
            username="ops",
            display_name="Ops",
            password="correct horse battery",
            locale="vi",
            grants=[users.GrantSpec(Role.OPS, province.id)],
        )
        secret = issue(db, user.id, TokenKind.API, lifetime=timedelta(hours=1)).secret
        db.commit()
    engine.dispose()
    return secret


def call(server: ServerProc, token: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        server.url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def status_of(server: ServerProc, token: str, station_id: str) -> str | None:
    try:
        return str(call(server, token, f"/api/ops/stations/{station_id}")["status"])
    except OSError:  # not heard of yet (404), or the server is busy starting
        return None


def offline_alerts(server: ServerProc, token: str, state: str) -> list[dict[str, Any]]:
    # Other alerts may be open too: this machine's clock may not be NTP-synchronised.
    alerts = call(server, token, f"/api/ops/alerts?station_id=st-2&state={state}")
    return [a for a in alerts if a["kind"] == "offline"]


def test_identify_diagnostics_and_restart_round_trip_to_a_real_agent(
    tmp_path: Path, broker: Broker, sqlite_url: str, hook: Hook
) -> None:
    server = start_server(
        tmp_path / "server", broker, sqlite_url, extra=FAST_OPS.format(hook=hook.url)
    )
    token = ops_token(sqlite_url)
    agent = start_agent(tmp_path, broker, "st-1")
    try:
        agent.feed(["KG-RG-000001", "KG-RG-000002"])

        def health() -> dict[str, Any] | None:
            try:
                s = call(server, token, "/api/ops/stations/st-1")
            except OSError:
                return None
            return s if s["status"] == "online" and s["scans_today"] == 2 else None

        station = wait_for(health, 30, "st-1 online with two scans in its heartbeat")
        hb = station["heartbeat"]
        assert hb["agent_version"] and hb["boot_id"] and hb["heartbeat_s"] == 1
        assert hb["disk_free_mb"] > 0 and hb["mem_total_mb"] > 0  # real readings of this machine
        assert hb["scanners_connected"] == hb["scanners_expected"] == 1

        cmd = call(
            server,
            token,
            "/api/ops/stations/st-1/commands",
            {"name": "identify", "args": {"duration_s": 2}},
        )

        def answered(command_id: str) -> dict[str, Any] | None:
            c = call(server, token, f"/api/ops/commands/{command_id}")
            return c if c["state"] in ("succeeded", "failed") else None

        done = wait_for(lambda: answered(cmd["command_id"]), 30, "the identify result")
        assert done["state"] == "succeeded" and done["result"] == {"duration_s": 2.0}
        wait_for(lambda: "signal identify" in agent.log.read_text(), 10, "the identify signal")

        cmd = call(server, token, "/api/ops/stations/st-1/commands", {"name": "diagnostics"})
        bundle = wait_for(lambda: answered(cmd["command_id"]), 30, "the diagnostics bundle")[
            "result"
        ]
        assert bundle["config"]["station_id"] == "st-1"
        assert bundle["config"]["mqtt"]["password_file"].endswith("mqtt.secret")
        assert any("starting" in line for line in bundle["logs"])
        assert "KG-RG-000001" not in json.dumps(bundle)  # scanned codes never leave this way

        cmd = call(server, token, "/api/ops/stations/st-1/commands", {"name": "restart"})
        wait_for(lambda: agent.proc.poll() is not None, 30, "the agent to exit for a restart")
        assert agent.proc.returncode == RESTART_EXIT_CODE
        assert wait_for(lambda: answered(cmd["command_id"]), 30, "the restart result")["ok"]
    finally:
        agent.stop()
        server.stop()


def test_a_dead_station_raises_an_offline_alert_and_its_return_resolves_it(
    tmp_path: Path, broker: Broker, sqlite_url: str, hook: Hook
) -> None:
    server = start_server(
        tmp_path / "server", broker, sqlite_url, extra=FAST_OPS.format(hook=hook.url)
    )
    token = ops_token(sqlite_url)
    agent = start_agent(tmp_path, broker, "st-2")
    try:
        wait_for(lambda: status_of(server, token, "st-2") == "online", 30, "st-2 online")
        agent.stop(signal.SIGKILL)  # a power cut: the broker sends its will
        wait_for(
            lambda: ("alert.opened", "st-2", "offline") in hook.kinds(), 30, "the alert webhook"
        )
        [alert] = offline_alerts(server, token, "live")
        assert alert["state"] == "open" and "st-2" in alert["text"]["vi"]
        assert status_of(server, token, "st-2") == "offline"

        # A command for the dead station waits for it...
        cmd = call(server, token, "/api/ops/stations/st-2/commands", {"name": "resync"})
        assert call(server, token, f"/api/ops/commands/{cmd['command_id']}")["state"] == "queued"

        agent = start_agent(tmp_path, broker, "st-2")  # ...and goes out with its birth
        wait_for(lambda: ("alert.resolved", "st-2", "offline") in hook.kinds(), 30, "resolution")
        [alert] = offline_alerts(server, token, "all")
        assert alert["state"] == "resolved" and alert["automatic"] is True
        wait_for(
            lambda: (
                call(server, token, f"/api/ops/commands/{cmd['command_id']}")["state"]
                == "succeeded"
            ),
            30,
            "the queued command to be answered after the return",
        )
    finally:
        agent.stop()
        server.stop()
