"""`swabline selftest` as a process, against a real broker (TLS) and a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.cards import SELFTEST_CARD
from swabline.broker import Broker
from tests.integration.harness import _env, start_server

pytestmark = pytest.mark.integration


def station(tmp_path: Path, broker: Broker, password: str) -> Path:
    secret = tmp_path / "mqtt-password"
    secret.write_text(password)
    conf = tmp_path / "station.toml"
    conf.write_text(
        'station_id = "st-1"\ndevelopment_raw_scans = true\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.tls_port}\n'
        f'password_file = "{secret}"\nca_file = "{broker.ca_file}"\n\n'
        '[scanner]\ntype = "stdin"\n\n'
        f'[outbox]\npath = "{tmp_path / "outbox"}"\n\n[feedback]\ntype = "log"\n'
    )
    return conf


def selftest(conf: Path, card: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "swabline",
            "selftest",
            "--config",
            str(conf),
            "--card-timeout",
            "20",
            "--timeout",
            "15",
        ],
        input=card + "\n",
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )


def checklist(out: str) -> dict[str, str]:
    """Each check's last word (the LEDs are SHOWN, then PASS once the test card confirms)."""
    return dict(
        (name, mark) for mark, name in re.findall(r"^\[(PASS|FAIL|SKIP|SHOWN)\] (\w+)", out, re.M)
    )


def test_selftest_of_a_working_station(tmp_path: Path, broker: Broker, sqlite_url: str) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url)
    try:
        result = selftest(station(tmp_path, broker, broker.users["st-1"]), SELFTEST_CARD)
        marks = checklist(result.stdout)
        assert {k: v for k, v in marks.items() if k != "clock"} == {
            n: "PASS" for n in ("leds", "scanner", "disk", "outbox", "broker", "server")
        }, result.stdout + result.stderr
        # Whether this machine's clock is NTP-synchronised is not ours to decide: the exit code
        # follows the checklist either way.
        assert result.returncode == (0 if marks["clock"] == "PASS" else 1)
        assert ("RESULT: PASS" in result.stdout) == (result.returncode == 0)
        assert "signal self_test" in result.stderr
        records = server.get("/api/records?station_id=st-1")
        assert [r["kind"] for r in records] == ["selftest"]
    finally:
        server.stop()


def test_selftest_names_what_is_wrong(tmp_path: Path, broker: Broker, sqlite_url: str) -> None:
    result = selftest(station(tmp_path, broker, "a-wrong-password"), "SWABLINE>TEST")
    marks = checklist(result.stdout)
    assert (marks["scanner"], marks["broker"], marks["server"]) == ("FAIL", "FAIL", "FAIL")
    assert "US keyboard layout" in result.stdout
    assert "refused us: Not authorized" in result.stdout
    assert result.returncode == 1 and "RESULT: FAIL" in result.stdout
    assert "signal rejected" in result.stderr


def test_the_broker_check_is_a_round_trip_that_catches_an_acl_refusal(
    tmp_path: Path, broker: Broker
) -> None:
    conf = station(tmp_path, broker, broker.users["st-1"])
    with broker.admin() as admin:  # a role that lost its heartbeat topic
        admin.execute(
            {
                "command": "removeRoleACL",
                "rolename": "station-st-1",
                "acltype": "publishClientSend",
                "topic": "swabline/v1/stations/st-1/heartbeat",
            }
        )
    result = selftest(conf, SELFTEST_CARD)
    marks = checklist(result.stdout)
    assert (marks["broker"], marks["server"]) == ("FAIL", "FAIL"), result.stdout
    assert "refused our heartbeat: Not authorized (the station's ACL)" in result.stdout
    assert result.returncode == 1
