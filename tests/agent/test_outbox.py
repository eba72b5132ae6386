"""The outbox keeps every record until it is acknowledged, across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import OutboxFullError
from agent.identity import uuid7
from agent.outbox import TinyDbOutbox
from protocol import Record


def record(seq: int, code: str = "TUBE") -> Record:
    return Record(
        record_id=uuid7(),
        station_id="st-1",
        seq=seq,
        boot_id="b",
        wall_time=1.0,
        mono_ns=seq,
        clock_synced=True,
        kind="scan",
        code=f"{code}-{seq}",
    )


def test_records_wait_in_sequence_order_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    recs = [record(s) for s in (1, 2, 3)]
    with TinyDbOutbox(path) as outbox:
        for r in reversed(recs):
            outbox.append(r)
        assert [r.seq for r in outbox.pending()] == [1, 2, 3]
        done = outbox.acknowledge([recs[1].record_id, "0192f0a0-0000-7000-8000-00000000dead"])
        assert done == [recs[1]]
        assert outbox.acknowledge([recs[1].record_id]) == []  # a second ack changes nothing
    with TinyDbOutbox(path) as reopened:  # an agent restart
        assert reopened.pending() == [recs[0], recs[2]]
        assert len(reopened) == 2


def test_sequence_high_water_mark_survives_acknowledging_everything(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    with TinyDbOutbox(path) as outbox:
        recs = [record(s) for s in (1, 2)]
        for r in recs:
            outbox.append(r)
        outbox.acknowledge(r.record_id for r in recs)
        assert len(outbox) == 0
    with TinyDbOutbox(path) as reopened:
        assert reopened.last_seq() == 2  # the next record gets seq 3, never 1 again


def test_counters_grow_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    with TinyDbOutbox(path) as outbox:
        assert [outbox.next_counter("bd_seq") for _ in range(3)] == [1, 2, 3]
    with TinyDbOutbox(path) as reopened:
        assert reopened.next_counter("bd_seq") == 4


def test_a_full_outbox_refuses_instead_of_dropping(tmp_path: Path) -> None:
    with TinyDbOutbox(tmp_path / "outbox.json", capacity=10) as outbox:
        for s in range(1, 11):
            outbox.append(record(s))
        with pytest.raises(OutboxFullError):
            outbox.append(record(11))
        assert [r.seq for r in outbox.pending()] == list(range(1, 11))


def test_uuid7_ids_are_unique_and_sort_by_time() -> None:
    ids = [uuid7(unix_ms=1_700_000_000_000 + i) for i in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)
    assert all(i[14] == "7" for i in ids)  # version nibble
    same_ms = {uuid7(unix_ms=1) for _ in range(1000)}
    assert len(same_ms) == 1000  # a stuck clock does not make ids collide
