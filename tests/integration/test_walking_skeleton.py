"""One scan travels from station to central database and comes back as an acknowledgement."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, func, select, text

from agent.outbox import TinyDbOutbox
from server.models import RecordRow, RejectedMessage
from swabline.broker import Broker
from tests.integration.harness import start_agent, start_server, wait_for

pytestmark = pytest.mark.integration


def test_1000_codes_from_three_stations_land_exactly_once(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url)
    agents = []
    try:
        agents.extend(start_agent(tmp_path, broker, f"st-{i}") for i in (1, 2, 3))
        codes = [f"TUBE-{i:05d}" for i in range(1000)]
        for i, agent in enumerate(agents):
            agent.feed(codes[i::3])
        engine = create_engine(sqlite_url)

        def stored() -> int:
            with engine.connect() as c:
                return int(c.scalar(select(func.count()).select_from(RecordRow)) or 0)

        wait_for(lambda: stored() >= 1000, 60, "1000 records in the database")

        def outboxes_empty() -> bool:
            stations = {s["station_id"]: s for s in server.get("/api/stations")}
            return all(
                stations.get(a.station_id, {}).get("outbox_depth") == 0
                and stations[a.station_id]["records"] == len(a.sent)
                for a in agents
            )

        wait_for(outboxes_empty, 30, "every station to report an empty outbox")
    finally:
        for a in agents:
            assert a.stop() == 0, a.log.read_text()
        server.stop()

    with engine.connect() as c:
        rows = c.execute(select(RecordRow.station_id, RecordRow.code, RecordRow.seq)).all()
    assert sorted(code for _, code, _ in rows) == sorted(codes)  # every code, exactly once
    for a in agents:
        seqs = sorted(seq for sid, _, seq in rows if sid == a.station_id)
        assert seqs == list(range(1, len(a.sent) + 1))  # no gap, no repeat
        with TinyDbOutbox(a.outbox) as outbox:
            assert len(outbox) == 0
    assert [s["state"] for s in server_stations_after(sqlite_url)] == ["offline"] * 3


def server_stations_after(url: str) -> list[dict[str, object]]:
    with create_engine(url).connect() as c:
        return [dict(r._mapping) for r in c.execute(text("SELECT state FROM stations"))]


def test_malformed_messages_are_kept_and_ingest_goes_on(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url)
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="st-4", protocol=mqtt.MQTTv5)
    intruder.username_pw_set("st-4", broker.users["st-4"])
    intruder.connect(broker.host, broker.port)
    intruder.loop_start()
    topic = "swabline/v1/stations/st-4/records"
    good = {
        "v": 1,
        "record_id": "01900000-0000-7000-8000-000000000001",
        "station_id": "st-4",
        "seq": 1,
        "boot_id": "b",
        "wall_time": 1.0,
        "mono_ns": 1,
        "clock_synced": False,
        "kind": "scan",
        "code": "TUBE-1",
    }
    bad = [
        (b"not json {", "not valid JSON"),
        (json.dumps({**good, "v": 2}).encode(), "unsupported protocol version"),
        (json.dumps({k: v for k, v in good.items() if k != "seq"}).encode(), "seq"),
        (b"\x00" * 1_000_000, "exceeds"),
        (json.dumps({**good, "station_id": "st-5"}).encode(), "does not match"),
    ]
    try:
        for payload, _ in bad:
            intruder.publish(topic, payload, qos=1).wait_for_publish(5)
        agent = start_agent(tmp_path, broker, "st-1")
        agent.feed(["TUBE-AFTER-BAD-INPUT"])
        engine = create_engine(sqlite_url)

        def rejected() -> list[tuple[str, int]]:
            with engine.connect() as c:
                return list(c.execute(select(RejectedMessage.reason, RejectedMessage.size)).all())

        wait_for(lambda: len(rejected()) == len(bad), 20, "rejections to be stored")
        with engine.connect() as c:
            wait_for(
                lambda: c.scalar(select(RecordRow.code).where(RecordRow.station_id == "st-1")),
                20,
                "the good record after the bad ones",
            )
        wait_for(lambda: server.get("/api/stations")[0]["outbox_depth"] == 0, 20, "ack")
        reasons = [r for r, _ in rejected()]
        for (_payload, expected), reason in zip(bad, reasons, strict=True):
            assert expected in reason
        assert 1_000_000 in [size for _, size in rejected()]
        assert server.proc.poll() is None
        agent.stop()
    finally:
        intruder.loop_stop()
        intruder.disconnect()
        server.stop()
