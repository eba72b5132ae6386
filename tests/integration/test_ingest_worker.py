"""`swabline ingest`: a worker without the web app (swabline-ingest@.service)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from protocol import Record, encode
from server.db import make_engine, migrate
from server.models import RecordRow
from swabline.broker import SERVER_USER, Broker
from tests.integration.harness import _env, wait_for, wait_or_kill

pytestmark = pytest.mark.integration


def config(tmp_path: Path, broker: Broker, db_url: str) -> Path:
    secret = tmp_path / "server.secret"
    secret.write_text(broker.users[SERVER_USER])
    conf = tmp_path / "server.toml"
    conf.write_text(
        f'[database]\nurl = "{db_url}"\n\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'password_file = "{secret}"\n'
    )
    return conf


def ingest(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "swabline", "ingest", "--config", str(conf), "--worker", "7"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )


def test_a_worker_refuses_an_unmigrated_database(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    proc = ingest(config(tmp_path, broker, sqlite_url), tmp_path / "ingest.log")
    assert proc.wait(timeout=60) == 2
    assert "start 'swabline server' first" in (tmp_path / "ingest.log").read_text()


def test_a_worker_stores_records(tmp_path: Path, broker: Broker, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrate(engine)
    log = tmp_path / "ingest.log"
    proc = ingest(config(tmp_path, broker, sqlite_url), log)
    station = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="st-2", protocol=mqtt.MQTTv5)
    station.username_pw_set("st-2", broker.users["st-2"])
    try:
        wait_for(lambda: "ingest connected" in log.read_text(), 30, "the worker to connect")
        station.connect(broker.host, broker.port)
        station.loop_start()
        record = Record(
            record_id="01900000-0000-7000-8000-000000000042",
            station_id="st-2",
            seq=1,
            boot_id="b",
            wall_time=1.0,
            mono_ns=1,
            clock_synced=True,
            kind="scan",
            code="KG-RG-000042",
        )
        station.publish("swabline/v1/stations/st-2/records", encode(record), qos=1)

        def stored() -> list[str | None]:
            with engine.connect() as c:
                return list(c.scalars(select(RecordRow.code)))

        wait_for(lambda: stored() == ["KG-RG-000042"], 30, "the record in the database")
    finally:
        station.loop_stop()
        station.disconnect()
        proc.terminate()
        # Still running 20 s later: SIGABRT writes its threads' stacks to its log
        # (PYTHONFAULTHANDLER, see harness._env), which the failure shows.
        code = wait_or_kill(proc, 20, signal.SIGABRT)
        if code is None:
            pytest.fail(f"still running 20 s after SIGTERM:\n{log.read_text()[-8000:]}")
        assert code == 0
    assert "ingest worker 7 stopped: 1 stored" in log.read_text()
