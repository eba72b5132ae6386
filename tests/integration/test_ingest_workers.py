"""Two ingest worker processes against a real Mosquitto: every record stored exactly once,
acknowledged, none lost even when a worker is killed mid-stream; statuses stay right."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from server.models import PoolMember, RecordRow, StationRow, Tube
from swabline.broker import Broker
from tests.integration.harness import StationPublisher, start_server, wait_for
from tests.server.factories import pool_session

pytestmark = pytest.mark.integration

STATIONS = ["st-1", "st-2", "st-3", "st-4"]


def worker_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"ingest worker \d+ started \(pid (\d+)\)", log.read_text())]


def metric(text: str, name: str) -> dict[str, float]:
    out = {}
    for m in re.finditer(rf'^{name}{{worker="(\d+)"}} ([0-9.e+]+)$', text, flags=re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def drain(pubs: list[StationPublisher], timeout: float) -> None:
    """Wait for every record to be acknowledged, resending like a station would."""
    deadline = time.monotonic() + timeout
    while any(p.unacked() for p in pubs):
        if time.monotonic() > deadline:
            left = sum(len(p.unacked()) for p in pubs)
            raise AssertionError(f"{left} records never acknowledged")
        time.sleep(3)
        for p in pubs:
            p.resend_unacked()


def test_two_workers_store_every_record_once_even_when_one_is_killed(
    tmp_path: Path, broker: Broker, db_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, db_url, workers=2)
    pubs = [StationPublisher(broker, sid) for sid in STATIONS]
    per_station = 80  # pool sessions of 3 persons: 5 records each
    try:
        batches = {
            p.station_id: [
                r
                for n in range(per_station // 5)
                for r in pool_session(
                    p.station_id,
                    f"{p.station_id}-T{n:03d}",
                    [f"{p.station_id}-{n}-{k}" for k in range(3)],
                    start=n * 5 + 1,
                )
            ]
            for p in pubs
        }
        for p in pubs:
            p.publish(batches[p.station_id][:30])
        pids = worker_pids(server.log)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)  # whatever it held uncommitted was never acked
        for p in pubs:
            p.publish(batches[p.station_id][30:60])
        drain(pubs, 90)
        wait_for(lambda: len(worker_pids(server.log)) == 3, 30, "the killed worker to restart")
        wait_for(
            lambda: server.log.read_text().count("ingest connected") >= 3, 30, "it to reconnect"
        )
        for p in pubs:  # the shared subscription hands the restarted worker its share
            p.publish(batches[p.station_id][60:])
        drain(pubs, 60)
        for p in pubs:  # everything again, as after a station's reboot: nothing new is stored
            p.publish(list(p.sent.values()))
        drain(pubs, 60)
        metrics = server.get_text("/metrics")
        inserted = metric(metrics, "swabline_ingest_records_inserted_total")
        assert set(inserted) == {"0", "1"} and all(v > 0 for v in inserted.values())
        assert metric(metrics, "swabline_ingest_restarts_total")["0"] == 1
        wait_for(
            lambda: (
                sum(
                    metric(
                        server.get_text("/metrics"), "swabline_ingest_records_duplicate_total"
                    ).values()
                )
                >= len(STATIONS) * per_station
            ),
            30,
            "the resent records to be counted as duplicates",
        )
    finally:
        for p in pubs:
            p.close()
        server.stop()
    engine = create_engine(db_url)
    with Session(engine) as db:
        rows = db.execute(select(RecordRow.station_id, RecordRow.seq)).all()
        for sid in STATIONS:  # every record of every station exactly once, no gap
            assert sorted(seq for s, seq in rows if s == sid) == list(range(1, per_station + 1))
        assert db.scalar(select(func.count()).select_from(Tube)) == len(STATIONS) * per_station // 5
        assert db.scalar(select(func.count()).select_from(PoolMember)) == (
            len(STATIONS) * per_station // 5 * 3
        )
        counts = dict(db.execute(select(StationRow.station_id, StationRow.record_count)).all())
        assert all(counts[sid] == per_station for sid in STATIONS)
    engine.dispose()


def status(state: str, bd: int) -> bytes:
    return json.dumps({"v": 1, "state": state, "bd_seq": bd, "time": time.time()}).encode()


def test_a_stale_death_never_overwrites_a_newer_birth_across_workers(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url, workers=2)
    st = StationPublisher(broker, "st-5")
    try:

        def current() -> tuple[str, int] | None:
            s = {x["station_id"]: x for x in server.get("/api/stations")}.get("st-5")
            return (s["state"], s["bd_seq"]) if s else None

        def statuses_seen(n: int, workers: tuple[str, ...] = ("0", "1")) -> bool:
            seen = metric(server.get_text("/metrics"), "swabline_ingest_statuses_total")
            return all(seen.get(w, 0) >= n for w in workers)

        st.publish_status(status("online", 7))
        st.publish_status(status("online", 8))  # a fast reconnect...
        st.publish_status(status("offline", 7))  # ...then the old connection's late will
        wait_for(lambda: statuses_seen(3), 20, "both workers to apply the three statuses")
        assert current() == ("online", 8)
        st.publish_status(status("offline", 8))
        wait_for(lambda: statuses_seen(4), 20, "both workers to apply death 8")
        assert current() == ("offline", 8)
        # A restarted worker gets the retained (latest) status again: nothing changes.
        os.kill(worker_pids(server.log)[1], signal.SIGKILL)
        wait_for(
            lambda: statuses_seen(5, ("1",)), 30, "the restarted worker to get the retained status"
        )
        assert current() == ("offline", 8)
    finally:
        st.close()
        server.stop()
