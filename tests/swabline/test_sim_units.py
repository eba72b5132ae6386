"""The simulator's parts that need no network: staff behaviour, outbox, percentiles, checks."""

from __future__ import annotations

import random
from itertools import islice
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from agent.ports import Scan
from protocol.events import DATA_MODELS
from server.db import make_engine, migrate
from swabline.sim.fleet import MemoryOutbox, PlannedWorkflow
from swabline.sim.metrics import FleetMetrics, percentile, percentiles
from swabline.sim.staff import QueueEnd, Staff, StaffProfile, Step
from swabline.sim.verify import check, failures


def _steps(staff: Staff, n: int) -> list[Step | QueueEnd]:
    out: list[Step | QueueEnd] = []
    seq = 0
    for step in islice(staff.steps(), n):
        if isinstance(step, Step):
            seq += 1
            staff.stored(step.entry.kind, seq)
        out.append(step)
    return out


def test_every_record_staff_make_is_valid_under_the_contract() -> None:
    profile = StaffProfile(undo_probability=0.2, single_fraction=0.5)
    kinds: set[str] = set()
    for no in range(1, 30):
        for step in _steps(Staff(no, random.Random(no), profile), 300):
            if isinstance(step, Step):
                DATA_MODELS[step.entry.kind].model_validate(step.entry.data)
                kinds.add(step.entry.kind)
    assert kinds == {"sign_in", "setting", "tube_opened", "person_added", "undo", "pool_closed"}


def test_pools_hold_the_station_pool_size_and_undo_names_the_person_taken_back() -> None:
    staff = Staff(
        7,
        random.Random(3),
        StaffProfile(pool_sizes=(5,), single_fraction=0.0, undo_probability=0.3),
    )
    steps = [s for s in _steps(staff, 2000) if isinstance(s, Step)]
    seq_of = {i + 1: s for i, s in enumerate(steps)}
    in_pool = 0
    for seq, step in seq_of.items():
        kind, data = step.entry.kind, step.entry.data
        if kind == "tube_opened":
            assert data["pool_size"] == 5
            in_pool = 0
        elif kind == "person_added":
            in_pool += 1
            assert data["position"] == in_pool
        elif kind == "undo":
            taken_back = seq_of[int(str(data["undone_seq"]))]
            assert taken_back.entry.kind == "person_added"
            assert taken_back.entry.data["person"]["key"] == data["person_key"]  # type: ignore[index]
            assert int(str(data["undone_seq"])) == seq - 1  # staff take back the last one
            in_pool -= 1
        elif kind == "pool_closed":
            assert data["persons"] == in_pool
            assert 1 <= in_pool <= 5


def test_queues_end_and_the_next_one_starts_with_a_new_tube() -> None:
    staff = Staff(
        1,
        random.Random(1),
        StaffProfile(
            queue_persons=(3, 3), pool_sizes=(10,), single_fraction=0.0, undo_probability=0.0
        ),
    )
    steps = _steps(staff, 2 + 6 * 3)
    ends = [i for i, s in enumerate(steps) if isinstance(s, QueueEnd)]
    assert ends and all(isinstance(steps[i + 1], Step) for i in ends if i + 1 < len(steps))
    after = [steps[i + 1] for i in ends if i + 1 < len(steps)]
    assert all(isinstance(s, Step) and s.entry.kind == "tube_opened" for s in after)
    closes = [s for s in steps if isinstance(s, Step) and s.entry.kind == "pool_closed"]
    assert closes and all(s.entry.data["reason"] == "card" for s in closes)


def test_memory_outbox_measures_latency_and_counts_repeat_acks() -> None:
    from protocol import Record

    metrics = FleetMetrics()
    box = MemoryOutbox(metrics=metrics, last_seq=41)
    assert box.last_seq() == 41
    recs = [
        Record(
            record_id=f"00000000-0000-7000-8000-{i:012d}",
            station_id="sim-1",
            seq=42 + i,
            boot_id="b",
            wall_time=0.0,
            mono_ns=0,
            clock_synced=True,
            kind="scan",
        )
        for i in range(3)
    ]
    for r in recs:
        box.append(r)
    assert [r.seq for r in box.pending()] == [42, 43, 44]
    assert box.created == [(r.record_id, r.seq) for r in recs]  # what the run is checked by
    assert box.acknowledge([recs[1].record_id]) == [recs[1].record_id]
    assert box.acknowledge([recs[1].record_id, recs[0].record_id]) == [recs[0].record_id]
    assert (metrics.created, metrics.acknowledged, metrics.repeat_acks) == (3, 2, 1)
    assert len(metrics.latencies_s) == 2 and len(box) == 1
    assert box.next_counter("bd_seq") == 1 and box.next_counter("bd_seq") == 2


def test_planned_workflow_refuses_a_scan_nobody_planned() -> None:
    wf = PlannedWorkflow()
    assert wf.decide(Scan(text="x", source="sim")).entries == ()


def test_percentiles_match_the_linear_definition() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentiles([float(v) for v in range(101)]) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def _database(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(make_engine(url))
    return create_engine(url)


def _insert(engine: Engine, *rows: tuple[str, str, int]) -> None:
    """Rows of ``records`` as (record_id, station_id, seq)."""
    with engine.begin() as conn:
        for rid, sid, seq in rows:
            conn.exec_driver_sql(
                "INSERT INTO records (record_id, station_id, seq, boot_id, wall_time, mono_ns, "
                "clock_synced, kind, payload, received_at) "
                "VALUES (?, ?, ?, 'b', 0, 0, 1, 'scan', x'7b7d', '2026-01-01')",
                (rid, sid, seq),
            )


def test_database_check_of_a_clean_run_finds_nothing_wrong(tmp_path: Path) -> None:
    engine = _database(tmp_path)
    _insert(engine, ("a", "sim-1", 1), ("b", "sim-1", 2), ("c", "sim-2", 1))
    result = check(
        engine, created={"sim-1": [("a", 1), ("b", 2)], "sim-2": [("c", 1)]}, pending=set()
    )
    assert result["stored"] == 3
    assert failures(result) == []
    assert result["lost"] == result["not_landed"] == result["stored_unacknowledged"] == 0


def test_database_check_tells_lost_from_not_yet_landed_and_from_displaced(tmp_path: Path) -> None:
    engine = _database(tmp_path)
    # 'a' landed; 'b' (seq 2) was acknowledged but is missing; 'c' (seq 3) is still in the
    # outbox; another record, 'z', holds 'd's seq 4; 'e' landed but its ack never came back;
    # 'y' is a row of sim-1 this run did not make.
    _insert(engine, ("a", "sim-1", 1), ("z", "sim-1", 4), ("e", "sim-1", 5), ("y", "sim-1", 9))
    result = check(
        engine,
        created={"sim-1": [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]},
        pending={"c", "e"},
    )
    assert result["stored"] == 2  # a, e
    assert result["lost"] == 2  # b, d: acknowledged (not pending) and not there
    assert result["not_landed"] == 1  # c
    assert result["seq_taken"] == 1  # d: 'z' holds sim-1 seq 4
    assert result["stored_unacknowledged"] == 1  # e
    assert result["foreign"] == 2  # z, y
    assert result["stations_known"] == 0
    assert failures(result) == [
        "2 acknowledged but not stored",
        "1 displaced by another record with the same seq",
    ]


def test_database_check_counts_records_the_server_refused(tmp_path: Path) -> None:
    engine = _database(tmp_path)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO rejected_messages (received_at, topic, station_id, reason, size, "
            "payload, record_id, seq) VALUES ('2026-01-01', 't', 'sim-1', 'bad data', 2, "
            "X'7B7D', 'a', 1), ('2026-01-01', 't', 'sim-1', 'not JSON', 1, X'78', NULL, NULL)"
        )
    result = check(engine, created={"sim-1": [("a", 1)]}, pending=set())
    assert result["refused"] == 1 and result["rejected"] == 2 and result["lost"] == 1
    assert "1 refused by the server" in failures(result)
