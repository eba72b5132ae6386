"""One scan travels from station to central database and comes back as an acknowledgement."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, func, select, text

from agent.outbox import TinyDbOutbox
from protocol import Ack, decode
from server.models import RecordRow, RejectedMessage
from swabline.broker import SERVER_USER, Broker
from tests.agent.people import cccd, health_qr
from tests.integration.harness import start_agent, start_server, wait_for

pytestmark = pytest.mark.integration


POOL_SIZE = 5
WORKFLOW = f"tube_patterns = ['TUBE-\\d{{5}}']\npool_size = {POOL_SIZE}\n"


def sampling_sequences(total: int, stations: int) -> list[list[list[str]]]:
    """Per station, groups of codes as staff scan them: a tube, then 1 to POOL_SIZE persons
    (synthetic CCCDs and health QRs, all different); ``total`` codes in all."""
    rng = random.Random(4)
    groups: list[list[str]] = []
    count = tubes = persons = 0
    while count < total:
        tubes += 1
        k = min(rng.randint(1, POOL_SIZE), total - count - 1)
        group = [f"TUBE-{tubes:05d}"]
        for _ in range(k):
            persons += 1
            if persons % 4:
                born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(27_000))
                group.append(cccd(persons, born=born, female=bool(persons % 2)))
            else:
                group.append(health_qr(f"QID{persons:07d}"))
        groups.append(group)
        count += len(group)
    return [groups[i::stations] for i in range(stations)]


def expected_records(groups: list[list[str]]) -> int:
    """tube_opened + person_added per code, plus a pool_closed for every pool that filled up
    or was followed by another tube (the last one stays open unless full)."""
    closes = sum(1 for i, g in enumerate(groups) if len(g) - 1 == POOL_SIZE or i < len(groups) - 1)
    return sum(len(g) for g in groups) + closes


def test_1000_codes_from_three_stations_land_exactly_once(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url)
    agents = [start_agent(tmp_path, broker, f"st-{i}", workflow=WORKFLOW) for i in (1, 2, 3)]
    per_station = sampling_sequences(1000, len(agents))
    codes = [code for groups in per_station for group in groups for code in group]
    assert len(codes) == len(set(codes)) == 1000
    expected = {a.station_id: expected_records(g) for a, g in zip(agents, per_station, strict=True)}
    engine = create_engine(sqlite_url)

    def stored() -> dict[str, int]:
        with engine.connect() as c:
            q = select(RecordRow.station_id, func.count()).group_by(RecordRow.station_id)
            return {sid: int(n) for sid, n in c.execute(q).all()}

    try:
        # Staff scan in bursts, and acknowledgements arrive in between: feed a tenth of each
        # station's groups at a time and wait until the server has stored what they made.
        for part in range(10):
            goal = {}
            for agent, groups in zip(agents, per_station, strict=True):
                done = len(groups) * part // 10
                upto = len(groups) * (part + 1) // 10
                agent.feed([code for group in groups[done:upto] for code in group])
                goal[agent.station_id] = expected_records(groups[:upto])
            wait_for(
                lambda goal=goal: all(stored().get(sid, 0) >= n for sid, n in goal.items()),
                120,
                f"the records of part {part + 1} of 10 in the database",
            )

        def outboxes_empty() -> bool:
            stations = {s["station_id"]: s for s in server.get("/api/stations")}
            return all(
                stations.get(a.station_id, {}).get("outbox_depth") == 0
                and stations[a.station_id]["records"] == expected[a.station_id]
                for a in agents
            )

        wait_for(outboxes_empty, 30, "every station to report an empty outbox")
    finally:
        for a in agents:
            assert a.stop() == 0, a.log.read_text()
        server.stop()

    with engine.connect() as c:
        rows = c.execute(
            select(RecordRow.station_id, RecordRow.code, RecordRow.seq, RecordRow.kind)
        ).all()
    # every scanned code, exactly once, as the tube or person it is; nothing refused
    assert sorted(code for _, code, _, _ in rows if code is not None) == sorted(codes)
    assert {kind for *_, kind in rows} == {"tube_opened", "person_added", "pool_closed"}
    for a, groups in zip(agents, per_station, strict=True):
        seqs = sorted(seq for sid, _, seq, _ in rows if sid == a.station_id)
        assert seqs == list(range(1, expected[a.station_id] + 1))  # no gap, no repeat
        with TinyDbOutbox(a.outbox) as outbox:
            assert len(outbox) == 0
            # the last pool outlives its acknowledgement: it is in the session history
            assert outbox.remembered()[-1].data["tube"] == groups[-1][0]
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
    # Watching st-1's acknowledgements as the server's user may: the ack itself, not a
    # heartbeat's outbox_depth (which a heartbeat sent before the scan also shows as 0).
    acks: list[Ack] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-acks", protocol=mqtt.MQTTv5)
    watcher.username_pw_set(SERVER_USER, broker.users[SERVER_USER])
    watcher.on_message = lambda _c, _u, msg: acks.append(decode(Ack, bytes(msg.payload)))
    watcher.connect(broker.host, broker.port)
    watcher.subscribe("swabline/v1/stations/st-1/acks", qos=1)
    watcher.loop_start()
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
            stored = wait_for(
                lambda: c.execute(
                    select(RecordRow.record_id, RecordRow.code).where(
                        RecordRow.station_id == "st-1"
                    )
                ).all(),
                20,
                "the good record after the bad ones",
            )
        assert [code for _, code in stored] == ["TUBE-AFTER-BAD-INPUT"]
        # The server acknowledged exactly that record, and the station forgot it because of
        # that acknowledgement (nothing else deletes from an outbox).
        wait_for(lambda: acks, 20, "the acknowledgement")
        assert acks[0].record_ids == [stored[0][0]] and acks[0].server_time is not None
        wait_for(lambda: "signal confirmed" in agent.log_text(), 20, "the station to see it")
        agent.stop()
        with TinyDbOutbox(agent.outbox) as outbox:
            assert len(outbox) == 0 and outbox.last_seq() == 1
        reasons = [r for r, _ in rejected()]
        for (_payload, expected), reason in zip(bad, reasons, strict=True):
            assert expected in reason
        assert 1_000_000 in [size for _, size in rejected()]
        # Each one is also in the server's log, with its topic and station.
        log = server.log.read_text(errors="replace")
        for reason in reasons:
            assert f"rejected message on {topic} (station st-4): {reason}" in log
        assert server.proc.poll() is None
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        intruder.loop_stop()
        intruder.disconnect()
        server.stop()
