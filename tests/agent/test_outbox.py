"""The station's outbox: records kept until acknowledged, seqs that never repeat, limits."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB
from tinydb.storages import JSONStorage
from tinydb.table import Document

from agent.errors import OutboxError, OutboxFullError, OutboxNotReadyError
from agent.fakes import FakeClock
from agent.identity import uuid7
from agent.journal import FileOps, JournalStorage
from agent.outbox import SEGMENT_SIZE, TinyDbOutbox
from protocol import Record
from tests.integration.harness import small_disk

PERSON = "079303001234|025123456|Nguyễn Thị Bình|15082003|Nữ|12 Lê Lợi, Q.1|20042021"


def record(seq: int, code: str = "TUBE-1", *, wall: float = 1_780_000_000.0) -> Record:
    return Record(
        record_id=uuid7(),
        station_id="st-1",
        seq=seq,
        boot_id="boot",
        wall_time=wall,
        mono_ns=seq,
        clock_synced=True,
        kind="scan",
        code=code,
    )


class DiskFull(FileOps):
    def __init__(self) -> None:
        self.full = False

    def write(self, fd: int, data: memoryview) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(fd, data)


def ready_outbox(path: Path, **kwargs: Any) -> TinyDbOutbox:
    outbox = TinyDbOutbox(path, **kwargs)
    outbox.learn_seq_floor(0)
    return outbox


def test_a_new_outbox_waits_for_the_seq_floor_then_continues_after_it(tmp_path: Path) -> None:
    with TinyDbOutbox(tmp_path / "ob") as outbox:
        assert not outbox.ready
        with pytest.raises(OutboxNotReadyError):
            outbox.append(record(1))
        assert len(outbox) == 0
        # A reinstalled station: the server already holds seqs up to 4120.
        assert outbox.learn_seq_floor(4120)
        assert outbox.ready and outbox.last_seq() == 4120
        with pytest.raises(OutboxError):
            outbox.append(record(4120))  # would repeat a seq the server has
        outbox.append(record(4121))
    with TinyDbOutbox(tmp_path / "ob") as outbox:  # the floor is remembered
        assert outbox.ready and outbox.last_seq() == 4121
        assert not outbox.learn_seq_floor(10)


def test_an_outbox_restored_from_an_old_copy_jumps_past_the_servers_seq(
    tmp_path: Path,
) -> None:
    with ready_outbox(tmp_path / "ob") as outbox:
        outbox.append(record(1))
        assert outbox.learn_seq_floor(50)
        assert outbox.last_seq() == 50


def test_pending_records_survive_a_reopen_in_order(tmp_path: Path) -> None:
    sent = [record(s, f"C{s}") for s in range(1, 2 * SEGMENT_SIZE + 10)]
    with ready_outbox(tmp_path / "ob") as outbox:
        outbox.append_many(sent[:5])
        for r in sent[5:]:
            outbox.append(r)
    with TinyDbOutbox(tmp_path / "ob") as outbox:
        assert len(outbox) == len(sent)
        assert outbox.pending() == sent
        assert (
            outbox.pending(3, after_seq=SEGMENT_SIZE - 2)
            == sent[SEGMENT_SIZE - 2 : SEGMENT_SIZE + 1]
        )
        assert outbox.pending(after_seq=len(sent)) == []


def test_acknowledged_records_leave_the_pending_list_and_are_purged_later(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    path = tmp_path / "ob"
    with ready_outbox(path, wall=clock.wall) as outbox:
        records = [record(s, PERSON) for s in range(1, 11)]
        outbox.append_many(records)
        done = outbox.acknowledge([r.record_id for r in records[:6]] + [uuid7()])
        assert done == [r.record_id for r in records[:6]]
        assert outbox.acknowledge([records[0].record_id]) == []  # a second ack: nothing to do
        assert outbox.pending() == records[6:]
        assert outbox.acked_kept == 6
        clock.advance(3600)
        outbox.acknowledge([records[6].record_id])
        assert outbox.purge(acked_before=clock.wall() - 1800) == 6
        assert outbox.acked_kept == 1
    with TinyDbOutbox(path, wall=clock.wall) as outbox:
        assert outbox.pending() == records[7:]
        assert outbox.acked_kept == 1
        assert outbox.purge(acked_before=clock.wall() + 1) == 1
        outbox.acknowledge([r.record_id for r in records[7:]])
        assert outbox.purge(acked_before=clock.wall() + 1) == 3
        assert len(outbox) == 0 and outbox.acked_kept == 0
        assert outbox.last_seq() == 10  # never goes back, although every record is gone
    # The purged personal data left the files too, not only the index.
    for f in path.iterdir():
        assert "Nguyễn".encode() not in f.read_bytes(), f
    with TinyDbOutbox(path) as outbox:
        assert outbox.last_seq() == 10


def test_a_full_outbox_refuses_and_stores_nothing(tmp_path: Path) -> None:
    with ready_outbox(tmp_path / "ob", capacity=20, warn_at_pct=50) as outbox:
        outbox.append_many([record(s) for s in range(1, 10)])
        assert not outbox.nearly_full
        outbox.append(record(10))
        assert outbox.nearly_full
        outbox.append_many([record(s) for s in range(11, 21)])
        with pytest.raises(OutboxFullError):
            outbox.append(record(21))
        with pytest.raises(OutboxFullError):
            outbox.append_many([record(21), record(22)])
        assert len(outbox) == 20 and outbox.last_seq() == 20
        # Acknowledged records make room (purged early, oldest first).
        outbox.acknowledge([r.record_id for r in outbox.pending(5)])
        outbox.append_many([record(s) for s in range(21, 26)])
        assert len(outbox) == 20 and outbox.acked_kept == 0


def test_a_full_disk_refuses_and_stores_nothing_half(tmp_path: Path) -> None:
    ops = DiskFull()
    path = tmp_path / "ob"
    with ready_outbox(path, storage_args={"file_ops": ops}) as outbox:
        outbox.append(record(1))
        ops.full = True
        boundary = [record(SEGMENT_SIZE - 1), record(SEGMENT_SIZE)]  # two segments at once
        with pytest.raises(OutboxFullError, match="disk full"):
            outbox.append_many(boundary)
        assert [r.seq for r in outbox.pending()] == [1]
        assert outbox.last_seq() == 1
        ops.full = False
        outbox.append_many([record(2), record(3)])
    with TinyDbOutbox(path) as outbox:
        assert [r.seq for r in outbox.pending()] == [1, 2, 3]


def test_counters_are_durable(tmp_path: Path) -> None:
    with ready_outbox(tmp_path / "ob") as outbox:
        assert [outbox.next_counter("bd_seq") for _ in range(3)] == [1, 2, 3]
    with TinyDbOutbox(tmp_path / "ob") as outbox:
        assert outbox.next_counter("bd_seq") == 4


def test_oldest_pending_time(tmp_path: Path) -> None:
    with ready_outbox(tmp_path / "ob") as outbox:
        assert outbox.oldest_pending_time() is None
        first, second = record(1, wall=100.0), record(2, wall=200.0)
        outbox.append_many([first, second])
        assert outbox.oldest_pending_time() == 100.0
        outbox.acknowledge([first.record_id])
        assert outbox.oldest_pending_time() == 200.0


def test_a_large_backlog_is_not_all_kept_in_memory(tmp_path: Path) -> None:
    small = {"cache_tables": 3, "compact_bytes": 50_000}
    total = 8 * SEGMENT_SIZE
    with ready_outbox(tmp_path / "ob", storage_args=small) as outbox:
        for start in range(1, total, 100):
            outbox.append_many([record(s) for s in range(start, start + 100)])
    with TinyDbOutbox(tmp_path / "ob", storage_args=small) as outbox:
        assert len(outbox) == total
        storage = outbox.storage
        assert isinstance(storage, JournalStorage)
        assert len(storage.read() or {}) > 8
        storage.compact()  # what the journal changed is written: every table may leave memory
        storage.trim()
        assert storage.tables_in_memory() <= 3
        assert [r.seq for r in outbox.pending()] == list(range(1, total + 1))
        assert storage.tables_in_memory() <= 3


def test_an_outbox_from_the_walking_skeleton_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    old = TinyDB(path, storage=JSONStorage)
    kept = [record(s) for s in (3, 4)]
    for r in kept:
        old.table("records").insert(Document(r.model_dump(mode="json"), doc_id=r.seq))
    old.table("meta").insert(Document({"last_seq": 2, "bd_seq": 7}, doc_id=1))
    old.close()
    with TinyDbOutbox(path) as outbox:
        assert outbox.ready  # it has a history: it knows its own sequence
        assert outbox.pending() == kept
        assert outbox.last_seq() == 4
        assert outbox.next_counter("bd_seq") == 8


def test_a_full_disk_still_takes_acknowledgements_and_recovers(tmp_path: Path) -> None:
    """A real 1 MiB file system: fill it, deliver, and scans are accepted again."""
    with small_disk(tmp_path / "disk", 1024) as disk:
        small = {"compact_bytes": 64 * 1024}  # and so a reserve of 256 KiB
        outbox = ready_outbox(disk / "ob", storage_args=small)
        saved: list[Record] = []
        with pytest.raises(OutboxFullError, match="disk full"):
            for seq in range(1, 100_000):
                r = record(seq, PERSON)
                outbox.append(r)
                saved.append(r)
        assert len(saved) > 100
        assert outbox.pending() == saved  # everything that was accepted is there, complete
        with pytest.raises(OutboxFullError):
            outbox.append(record(len(saved) + 1))
        # The server acknowledges: those writes must still work on the full disk.
        for i in range(0, len(saved), 100):
            part = [r.record_id for r in saved[i : i + 100]]
            assert outbox.acknowledge(part) == part
        assert len(outbox) == 0
        later = record(len(saved) + 1)
        outbox.append(later)  # delivered records made room
        outbox.close()
        with TinyDbOutbox(disk / "ob", storage_args=small) as again:
            assert again.pending() == [later]


def test_uuid7_ids_are_unique_and_sort_by_time() -> None:
    ids = [uuid7(unix_ms=1_700_000_000_000 + i) for i in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)
    assert all(i[14] == "7" for i in ids)  # version nibble
    same_ms = {uuid7(unix_ms=1) for _ in range(1000)}
    assert len(same_ms) == 1000  # a stuck clock does not make ids collide
