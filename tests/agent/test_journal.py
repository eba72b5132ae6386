"""The crash-safe TinyDB storage: what is written survives, what is torn is dropped, cleanly."""

from __future__ import annotations

import errno
import json
import logging
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinydb import TinyDB, where
from tinydb.operations import delete, increment
from tinydb.storages import JSONStorage
from tinydb.table import Document

from agent.journal import (
    JOURNAL,
    FileOps,
    JournalCorruptError,
    JournalStorage,
    scan_journal,
    table_file,
)
from tests.integration.harness import small_disk


def open_db(path: Path, **kwargs: Any) -> TinyDB:
    return TinyDB(path, storage=JournalStorage, **kwargs)


def contents(db: TinyDB) -> dict[str, dict[int, dict[str, Any]]]:
    return {name: {d.doc_id: dict(d) for d in db.table(name).all()} for name in db.tables()}


class FailingOps(FileOps):
    """Real system calls until ``fail_after`` more bytes were written, then ENOSPC (disk full)."""

    def __init__(self, fail_after: int | None = None, *, fail_sync: bool = False) -> None:
        self.fail_after = fail_after
        self.fail_sync = fail_sync

    def write(self, fd: int, data: memoryview) -> int:
        if self.fail_after is not None:
            if self.fail_after <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            data = data[: self.fail_after]
            self.fail_after -= len(data)
        return super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.fail_sync:
            raise OSError(errno.EIO, "Input/output error")
        super().fdatasync(fd)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "outbox"


def test_everything_tinydb_does_survives_a_reopen(folder: Path) -> None:
    db = open_db(folder)
    people = db.table("people")
    people.insert_multiple({"name": f"n{i}", "n": i} for i in range(10))
    people.insert(Document({"name": "explicit", "n": 99}, doc_id=500))
    people.update({"n": -1}, where("name") == "n3")  # in place
    people.update(increment("n"), doc_ids=[1])  # in place, through a callable
    people.update(delete("name"), doc_ids=[2])
    people.remove(where("n") == 5)
    people.upsert({"name": "new", "n": 7}, where("name") == "nobody")
    db.table("empty")  # never written: does not exist
    db.table("gone").insert({"x": 1})
    db.drop_table("gone")
    db.table("cleared").insert({"x": 1})
    db.table("cleared").truncate()
    db.table("vi").insert({"name": "Nguyễn Thị Bình"})
    expected = contents(db)
    db.close()

    again = open_db(folder)
    assert contents(again) == expected
    assert again.table("people").get(doc_id=1) == {"name": "n0", "n": 1}
    assert again.table("people").get(doc_id=2) == {"n": 1}
    assert "gone" not in again.tables()
    assert again.table("vi").all() == [{"name": "Nguyễn Thị Bình"}]
    again.close()


def test_a_failed_write_leaves_nothing_behind_in_memory_or_on_disk(folder: Path) -> None:
    ops = FailingOps()
    db = open_db(folder, file_ops=ops)
    t = db.table("t")
    t.insert({"a": 1})
    journal_before = (folder / JOURNAL).read_bytes()

    ops.fail_after = 10  # the next line is torn by a full disk
    with pytest.raises(OSError) as exc:
        t.insert({"a": 2})
    assert exc.value.errno == errno.ENOSPC
    ops.fail_after = 0
    with pytest.raises(OSError):
        t.update({"a": 100}, doc_ids=[1])  # in place: must be undone
    assert t.all() == [{"a": 1}]
    assert (folder / JOURNAL).read_bytes() == journal_before

    ops.fail_after = None
    ops.fail_sync = True  # written but not confirmed on disk: also undone
    with pytest.raises(OSError):
        t.insert({"a": 3})
    assert t.all() == [{"a": 1}]
    assert (folder / JOURNAL).read_bytes() == journal_before

    ops.fail_sync = False
    t.insert({"a": 4})
    db.close()
    assert [dict(d) for d in open_db(folder).table("t").all()] == [{"a": 1}, {"a": 4}]


def test_a_transaction_is_stored_whole_or_not_at_all(folder: Path) -> None:
    ops = FailingOps()
    db = open_db(folder, file_ops=ops)
    storage = db.storage
    assert isinstance(storage, JournalStorage)
    db.table("a").insert({"v": 0})
    with storage.transaction():
        db.table("a").update({"v": 1}, doc_ids=[1])
        db.table("b").insert({"v": 2})
    assert storage.stats.writes == 2  # one line for the whole transaction

    ops.fail_after = 0
    with pytest.raises(OSError), storage.transaction():
        db.table("a").update({"v": 10}, doc_ids=[1])
        db.table("b").insert({"v": 20})
        db.table("c").insert({"v": 30})
    assert contents(db) == {"a": {1: {"v": 1}}, "b": {1: {"v": 2}}}

    ops.fail_after = None
    with pytest.raises(RuntimeError), storage.transaction():
        db.table("a").update({"v": 10}, doc_ids=[1])
        raise RuntimeError("the caller changed its mind")
    assert contents(db) == {"a": {1: {"v": 1}}, "b": {1: {"v": 2}}}
    db.close()
    assert contents(open_db(folder)) == {"a": {1: {"v": 1}}, "b": {1: {"v": 2}}}


def fill(folder: Path, n: int) -> list[int]:
    """n inserts, one line each; returns the end offset of each line in the journal."""
    db = open_db(folder, compact_bytes=1 << 30)
    for i in range(n):
        db.table("records").insert({"i": i, "code": f"TUBE-{i:04d}"})
    db.close()
    return [line.end for line in scan_journal((folder / JOURNAL).read_bytes())]


def test_a_torn_last_write_is_dropped_and_the_journal_goes_on(folder: Path) -> None:
    ends = fill(folder, 20)
    journal = folder / JOURNAL
    full = journal.read_bytes()
    for cut in range(ends[-2] + 1, ends[-1]):  # every offset inside the last line
        journal.write_bytes(full[:cut])
        db = open_db(folder)
        assert [d["i"] for d in db.table("records").all()] == list(range(19))
        db.close()
        assert journal.read_bytes() == full[: ends[-2]]  # the torn bytes are gone
    db = open_db(folder)
    db.table("records").insert({"i": "after"})
    db.close()
    assert [d["i"] for d in open_db(folder).table("records").all()][-2:] == [18, "after"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fraction=st.floats(0, 1))
def test_a_journal_cut_anywhere_keeps_every_complete_change(
    tmp_path: Path, fraction: float
) -> None:
    folder = tmp_path / uuid.uuid4().hex
    ends = fill(folder, 30)
    journal = folder / JOURNAL
    cut = int(ends[-1] * fraction)
    journal.write_bytes(journal.read_bytes()[:cut])
    complete = sum(1 for end in ends if end <= cut)
    db = open_db(folder)
    assert [d["i"] for d in db.table("records").all()] == list(range(complete))
    db.close()


def test_garbage_after_a_power_cut_is_a_torn_write(folder: Path) -> None:
    fill(folder, 5)
    with (folder / JOURNAL).open("ab") as f:
        f.write(b"\0" * 300)  # blocks allocated but never written
    assert len(open_db(folder).table("records")) == 5


def test_a_damaged_line_in_the_middle_is_reported_and_kept(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ends = fill(folder, 10)
    journal = folder / JOURNAL
    data = bytearray(journal.read_bytes())
    data[ends[3] + 20] ^= 0xFF  # a flipped bit inside the 5th line
    journal.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        db = open_db(folder)
    assert [d["i"] for d in db.table("records").all()] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert "damaged line" in caplog.text
    kept = list(folder.glob("journal.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(data)
    db.close()
    assert len(open_db(folder).table("records")) == 9  # compacted: no longer depends on it


def test_compaction_keeps_the_data_and_empties_the_journal(folder: Path) -> None:
    db = open_db(folder, compact_bytes=2000)
    for i in range(100):
        db.table(f"seg.{i // 25}").insert({"i": i, "pad": "x" * 50})
    db.table("seg.0").remove(doc_ids=[1, 2, 3])
    db.drop_table("seg.3")
    storage = db.storage
    assert isinstance(storage, JournalStorage)
    assert storage.stats.compactions > 0
    assert storage.compact()
    assert (folder / JOURNAL).stat().st_size == 0
    assert not (folder / table_file("seg.3")).exists()
    expected = contents(db)
    db.close()
    assert contents(open_db(folder)) == expected


def test_a_compaction_that_runs_out_of_space_keeps_the_journal(folder: Path) -> None:
    ops = FailingOps()
    db = open_db(folder, compact_bytes=1 << 30, file_ops=ops)
    for i in range(20):
        db.table("t").insert({"i": i})
    storage = db.storage
    assert isinstance(storage, JournalStorage)
    ops.fail_after = 100
    assert not storage.compact()
    assert not list(folder.glob(".*.tmp"))
    ops.fail_after = None
    db.table("t").insert({"i": 20})
    db.close()
    assert [d["i"] for d in open_db(folder).table("t").all()] == list(range(21))


def test_a_crash_during_compaction_loses_nothing(folder: Path) -> None:
    """Snapshots written, journal not yet emptied: the journal's lines are skipped, not redone."""
    db = open_db(folder, compact_bytes=1 << 30)
    t = db.table("t")
    for i in range(5):
        t.insert({"i": i})
    journal = (folder / JOURNAL).read_bytes()
    storage = db.storage
    assert isinstance(storage, JournalStorage)
    storage.compact()
    t.remove(doc_ids=[1])
    t.insert({"i": 5})
    db.close()
    # Put the pre-compaction lines back in front, as if the truncation never happened.
    (folder / JOURNAL).write_bytes(journal + (folder / JOURNAL).read_bytes())
    (folder / ".t-t.json.tmp").write_bytes(b"half a snapsh")
    assert [d["i"] for d in open_db(folder).table("t").all()] == [1, 2, 3, 4, 5]
    assert not (folder / ".t-t.json.tmp").exists()


def test_a_damaged_snapshot_is_an_error_that_names_the_file(folder: Path) -> None:
    db = open_db(folder)
    db.table("t").insert({"i": 1})
    storage = db.storage
    assert isinstance(storage, JournalStorage)
    storage.compact()
    db.close()
    f = folder / table_file("t")
    f.write_bytes(f.read_bytes().replace(b'"i":1', b'"i":2'))
    with pytest.raises(JournalCorruptError, match=r"t-t\.json"):
        open_db(folder).table("t").all()


def test_unchanged_tables_leave_memory_and_come_back_from_disk(folder: Path) -> None:
    db = open_db(folder, cache_tables=2, compact_bytes=500)
    for seg in range(10):
        db.table(f"seg.{seg}").insert_multiple({"seg": seg, "i": i} for i in range(5))
    storage = db.storage
    assert isinstance(storage, JournalStorage)
    storage.compact()
    storage.trim()
    assert storage.tables_in_memory() == 2
    assert db.table("seg.0").get(doc_id=3) == {"seg": 0, "i": 2}
    db.table("seg.1").update({"i": 100}, doc_ids=[1])
    db.table("seg.2").remove(doc_ids=[2])
    expected = contents(db)
    db.close()
    assert contents(open_db(folder, cache_tables=1)) == expected


def test_relaxed_writes_are_not_synced_until_the_next_synced_one(folder: Path) -> None:
    db = open_db(folder)
    storage = db.storage
    assert isinstance(storage, JournalStorage)
    before = storage.stats.syncs
    with storage.relaxed():
        for i in range(10):
            db.table("acks").insert({"i": i})
    assert storage.stats.syncs == before
    db.table("records").insert({"i": 0})
    assert storage.stats.syncs == before + 1
    db.close()
    assert len(open_db(folder).table("acks")) == 10


def test_bytes_written_per_insert_do_not_grow_with_the_backlog(folder: Path) -> None:
    db = open_db(folder, cache_tables=4)
    storage = db.storage
    assert isinstance(storage, JournalStorage)

    def cost(n: int) -> float:
        before = storage.stats.bytes_written
        with storage.relaxed():  # the bytes are the same, the test is faster
            for i in range(n):
                table = db.table(f"records.{storage.stats.writes // 250}")
                table.insert({"code": f"TUBE-{i:06d}"})
        return (storage.stats.bytes_written - before) / n

    first = cost(1000)
    for _ in range(5):
        cost(1000)
    assert cost(1000) < 1.2 * first  # journal + amortised compaction, flat


def test_a_tinydb_json_file_is_imported(tmp_path: Path) -> None:
    path = tmp_path / "outbox.json"
    old = TinyDB(path, storage=JSONStorage)
    old.table("records").insert(Document({"code": "A"}, doc_id=7))
    old.close()
    db = open_db(path)
    assert path.is_dir()
    assert db.table("records").get(doc_id=7) == {"code": "A"}
    assert not path.with_name("outbox.json.legacy").exists()


def test_the_same_operations_give_the_same_data_as_tinydb_json_storage(tmp_path: Path) -> None:
    """A long random sequence of operations, compared against TinyDB's own JSONStorage."""
    rng = random.Random(5)
    folder = tmp_path / "db"
    mine = open_db(folder, compact_bytes=3000, cache_tables=2)
    ref = TinyDB(tmp_path / "ref.json", storage=JSONStorage)
    for step in range(400):
        name = f"t{rng.randrange(5)}"
        op = rng.random()
        for db in (mine, ref):
            table = db.table(name)
            rng_state = rng.getstate()
            if op < 0.5:
                table.insert({"v": step, "s": "x" * rng.randrange(30)})
            elif op < 0.7 and len(table):
                table.update({"v": -step}, doc_ids=[table.all()[0].doc_id])
            elif op < 0.9 and len(table):
                table.remove(doc_ids=[table.all()[-1].doc_id])
            elif op < 0.95:
                db.drop_table(name)
            rng.setstate(rng_state)
        rng.random()
        if step % 97 == 0:
            mine.close()
            mine = open_db(folder, compact_bytes=3000, cache_tables=2)
            ref.close()
            ref = TinyDB(tmp_path / "ref.json", storage=JSONStorage)
        assert contents(mine) == contents(ref), step
    mine.close()
    ref.close()


def test_journal_lines_are_json_with_a_checksum(folder: Path) -> None:
    fill(folder, 1)
    line = (folder / JOURNAL).read_bytes()
    crc, payload = line.rstrip(b"\n").split(b" ", 1)
    entry = json.loads(payload)
    assert len(crc) == 8 and entry["n"] == 1
    assert entry["ops"][0][:3] == ["s", "records", "1"]


def test_a_full_disk_refuses_writes_until_there_is_room_again(tmp_path: Path) -> None:
    """On a real 1 MiB file system: the reserve serves maintenance, then normal writes resume."""
    with small_disk(tmp_path / "disk", 1024) as disk:
        db = open_db(disk / "db", reserve_bytes=256 * 1024, compact_bytes=128 * 1024)
        storage = db.storage
        assert isinstance(storage, JournalStorage)
        big = "x" * 2000
        with pytest.raises(OSError) as exc:
            for i in range(10_000):
                db.table(f"seg.{i // 50}").insert({"i": i, "pad": big})
        assert exc.value.errno == errno.ENOSPC
        assert storage.low_space
        written = contents(db)
        with pytest.raises(OSError):
            db.table("seg.0").insert({"more": 1})  # refused without trying
        with storage.maintenance():
            for i in range(100):  # acknowledgements: the reserve makes room for them
                db.table("acks").insert({"ack": i, "pad": big})
        assert not (disk / "db" / "reserve").exists()
        with pytest.raises(OSError):
            db.table("seg.0").insert({"more": 1})
        # Delivered data goes: enough room for the reserve and as much again.
        for name in [n for n in db.tables() if n.startswith("seg.")][:-3]:
            with storage.maintenance():
                db.drop_table(name)
        assert storage.compact()
        assert not storage.low_space
        db.table("seg.new").insert({"after": 1})
        kept = {n: t for n, t in written.items() if n in db.tables()}
        db.close()
        again = open_db(disk / "db")
        assert {n: t for n, t in contents(again).items() if n in kept} == kept
        assert again.table("seg.new").all() == [{"after": 1}]
        again.close()
