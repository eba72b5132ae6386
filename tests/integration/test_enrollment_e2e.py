"""From an enrollment token to a working station and back to a revoked one, with real processes:
Mosquitto (dynamic security, TLS), the server, `swabline admin`, `swabline provision
--wait-for-card` reading cards from its scanner, and the agent it configured."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from agent.config import load_config
from agent.outbox import TinyDbOutbox
from protocol.cards import EnrollmentCard
from server.access import system_principal
from server.db import make_engine
from server.enrollment import create_token, sampling_facility
from swabline.broker import Broker
from tests.integration.harness import ServerProc, _env, mqtt_connack, start_server, wait_for

pytestmark = pytest.mark.integration


def swabline(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """A long-running ``swabline`` process reading stdin, writing ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "swabline", *args],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )


def swabline_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swabline", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=20)
    if proc.stdin:
        proc.stdin.close()


def station_template(state: Path, server_url: str) -> str:
    """The image's template, reading "the scanner" from stdin and pinned to ``server_url``."""
    return (
        "development_raw_scans = true\n\n"
        '[mqtt]\nheartbeat_s = 1\n\n[scanner]\ntype = "stdin"\n\n'
        f'[outbox]\npath = "{state / "outbox"}"\n\n[feedback]\ntype = "log"\n\n'
        f'[enrollment]\nservers = ["{server_url}"]\n'
    )


def enrolling_server(tmp_path: Path, broker: Broker, sqlite_url: str) -> ServerProc:
    """The server, enrolling stations on ``broker``'s TLS listener, with the province's tree
    holding the sampling facility HN-CauGiay."""
    admin_secret = tmp_path / "broker-admin.secret"
    admin_secret.write_text(broker.admin_password)
    enrollment = (
        f'\n[enrollment]\nbroker_host = "127.0.0.1"\nbroker_port = {broker.tls_port}\n'
        f'ca_file = "{broker.ca_file}"\nbroker_admin_password_file = "{admin_secret}"\n'
    )
    server = start_server(tmp_path / "server", broker, sqlite_url, extra=enrollment)
    tree = tmp_path / "tree.csv"
    tree.write_text(
        "code,name,kind,parent_code,facility_kind\n"
        "HN-CG,Cầu Giấy,district,TEST,\n"
        "HN-CauGiay,Trạm Y tế Cầu Giấy,facility,HN-CG,sampling\n",
        encoding="utf-8",
    )
    conf = tmp_path / "server" / "server.toml"
    imported = swabline_run("admin", "--config", str(conf), "import-orgs", str(tree))
    if imported.returncode != 0:
        server.stop()
        raise AssertionError(imported.stderr)
    return server


def test_a_station_enrolls_from_a_card_works_and_is_decommissioned(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = enrolling_server(tmp_path, broker, sqlite_url)
    conf = tmp_path / "server" / "server.toml"
    agent = prov = None
    try:
        # The admin makes a token and its printable card.
        card_html = tmp_path / "card.html"
        made = swabline_run(
            "admin",
            "enroll-token",
            "--config",
            str(conf),
            "--facility",
            "HN-CauGiay",
            "--expires-in",
            "2h",
            "--card",
            str(card_html),
            "--server-url",
            server.url,
        )
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert "enrolls a new station (ids hn-caugiay-NN) for facility HN-CauGiay" in made.stderr
        assert stat.S_IMODE(card_html.stat().st_mode) == 0o600 and token in card_html.read_text()
        engine = make_engine(sqlite_url)
        with Session(engine) as db:
            root = system_principal("test")
            expired = create_token(
                db,
                root,
                facility=sampling_facility(db, root, code="HN-CauGiay"),
                lifetime=timedelta(minutes=5),
                now=datetime.now(UTC) - timedelta(hours=1),
            ).token
            db.commit()
        engine.dispose()

        # An unprovisioned station waits for a card on its scanner (stdin here).
        etc, state = tmp_path / "etc", tmp_path / "state"
        etc.mkdir()
        template = tmp_path / "station.template.toml"
        template.write_text(station_template(state, server.url))
        prov_log = tmp_path / "provision.log"
        prov = swabline(
            "provision",
            "--wait-for-card",
            "--template",
            str(template),
            "--out",
            str(etc / "station.toml"),
            log=prov_log,
        )
        assert prov.stdin is not None
        for text in (
            "TUBE-NOT-A-CARD",
            EnrollmentCard(server.url, expired).encode(),
            EnrollmentCard("https://swabline.example.org.evil.org", token).encode(),  # forged
            EnrollmentCard(server.url, token).encode(),
        ):
            prov.stdin.write(text.encode() + b"\n")
            prov.stdin.flush()
        assert prov.wait(timeout=60) == 0, prov_log.read_text()
        said = prov_log.read_text()
        assert said.count("signal rejected") == 3 and "signal confirmed" in said
        assert "not an enrollment card" in said
        assert "this enrollment token expired on" in said
        assert "is not a server this station may enroll with" in said
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in etc.iterdir()}
        assert files == {"station.toml": 0o600, "mqtt-password": 0o600, "ca.crt": 0o644}

        # The same token again, straight to the API: refused, with the reason.
        req = urllib.request.Request(
            server.url + "/api/enroll",
            data=json.dumps({"token": token}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as reused:
            urllib.request.urlopen(req, timeout=10)
        assert reused.value.code == 409
        assert "already used" in json.loads(reused.value.read())["detail"]

        # The agent runs on what provisioning wrote: TLS to the broker, its own identity.
        check = swabline_run("agent", "--config", str(etc / "station.toml"), "--check-config")
        assert check.returncode == 0, check.stderr
        agent_log = tmp_path / "agent.log"
        agent = swabline("agent", "--config", str(etc / "station.toml"), log=agent_log)
        assert agent.stdin is not None
        agent.stdin.write(b"KG-RG-000123\n")
        agent.stdin.flush()

        def stored() -> bool:
            return [r["code"] for r in server.get("/api/records?station_id=hn-caugiay-01")] == [
                "KG-RG-000123"
            ]

        wait_for(stored, 30, "the enrolled station's scan in the database")
        wait_for(lambda: "condition offline off" in agent_log.read_text(), 10, "online")

        # Decommissioned: the broker closes its session and refuses it from now on.
        gone = swabline_run(
            "admin", "decommission", "--config", str(conf), "--station", "hn-caugiay-01"
        )
        assert gone.returncode == 0, gone.stderr
        wait_for(lambda: "condition offline on" in agent_log.read_text(), 10, "the agent cut off")
        password = (etc / "mqtt-password").read_text().strip()
        assert (
            mqtt_connack(
                "127.0.0.1",
                broker.tls_port,
                "hn-caugiay-01",
                password,
                ca_file=str(etc / "ca.crt"),
            )
            == "Not authorized"
        )
    finally:
        for proc in (agent, prov):
            if proc is not None:
                stop(proc)
        server.stop()


def new_token(conf: Path) -> str:
    """A token for a new station of HN-CauGiay, as an admin makes it."""
    made = swabline_run("admin", "enroll-token", "--config", str(conf), "--facility", "HN-CauGiay")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def scan_until_acknowledged(agent_config: Path, log: Path, codes: list[str]) -> None:
    """Run the agent on ``agent_config``, scan ``codes``, stop it once the server acknowledged
    them all (its outbox is then empty: checked on the files)."""
    agent = swabline("agent", "--config", str(agent_config), log=log)
    try:
        assert agent.stdin is not None
        agent.stdin.write("".join(c + "\n" for c in codes).encode())
        agent.stdin.flush()
        start = log.read_text().count("signal confirmed")
        wait_for(lambda: log.read_text().count("signal confirmed") > start, 30, "the acks")
    finally:
        stop(agent)
    outbox = load_config(agent_config).outbox.path
    with TinyDbOutbox(outbox) as box:
        assert len(box) == 0


def test_a_technician_enrolls_by_keyboard_and_later_moves_the_pi_to_a_new_station_id(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = enrolling_server(tmp_path, broker, sqlite_url)
    conf = tmp_path / "server" / "server.toml"
    try:
        etc, state = tmp_path / "etc", tmp_path / "state"
        etc.mkdir()
        template = tmp_path / "station.template.toml"
        template.write_text(station_template(state, server.url))
        station_toml = etc / "station.toml"

        def provision_by_hand(server_url: str, token: str) -> subprocess.CompletedProcess[str]:
            return swabline_run(
                "provision",
                "--server",
                server_url,
                "--token",
                token,
                "--template",
                str(template),
                "--out",
                str(station_toml),
            )

        done = provision_by_hand(server.url, new_token(conf))
        assert done.returncode == 0, done.stderr
        assert "enrolled as station hn-caugiay-01" in done.stderr
        assert "signal confirmed" in done.stderr  # the LEDs and buzzer, as with a card
        assert f"start the agent yourself with 'swabline agent --config {station_toml}'" in (
            done.stderr
        )  # no systemd here: on a station, swabline-agent.service is started instead
        files = {p.name: p.read_bytes() for p in etc.iterdir()}

        # A forged token, and a server the image does not name: refused, nothing changes.
        forged = provision_by_hand(server.url, "forged-token-0123456789")
        assert forged.returncode == 1 and "signal rejected" in forged.stderr
        assert "the server refused" in forged.stderr
        elsewhere = provision_by_hand("https://swabline.example.org.evil.org", new_token(conf))
        assert elsewhere.returncode == 1 and "signal rejected" in elsewhere.stderr
        assert "is not a server this station may enroll with" in elsewhere.stderr
        assert {p.name: p.read_bytes() for p in etc.iterdir()} == files

        # The station works; everything it scanned is acknowledged.
        scan_until_acknowledged(station_toml, tmp_path / "agent-1.log", ["A-1", "A-2", "A-3"])
        first = server.get("/api/records?station_id=hn-caugiay-01")
        assert sorted(r["seq"] for r in first) == [1, 2, 3]

        # Moved to a new station id: its numbering starts afresh, not at 4 (nothing of the old
        # identity was waiting, but its counter was).
        moved = provision_by_hand(server.url, new_token(conf))
        assert moved.returncode == 0, moved.stderr
        assert "enrolled as station hn-caugiay-02" in moved.stderr
        assert "the outbox of hn-caugiay-01 set aside" in moved.stderr
        scan_until_acknowledged(station_toml, tmp_path / "agent-2.log", ["B-1"])
        second = server.get("/api/records?station_id=hn-caugiay-02")
        assert [(r["code"], r["seq"]) for r in second] == [("B-1", 1)]
    finally:
        server.stop()
