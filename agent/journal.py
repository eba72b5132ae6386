"""A crash-safe TinyDB storage: one snapshot file per table plus an append-only journal.

TinyDB's own ``JSONStorage`` rewrites the whole file on every change and can be left
unparseable by a crash (see ``docs/durability.md``). ``JournalStorage`` keeps the whole database
in memory, as TinyDB expects, and makes each change durable by appending one checksummed line to
a journal and syncing it to disk before ``write`` returns. Now and then (when the journal has
grown past ``compact_bytes``) the tables changed since the last compaction are written to their
own snapshot files (write a temporary file, fsync, ``os.replace``, fsync the folder) and the
journal is emptied.

Layout of the storage folder::

    journal             one line per change: "<crc32 hex> <json>\\n", appended, fdatasync'ed
    t-<table>.json      snapshot of one table, replaced atomically: a header line (serial,
                        name, count) then a line with the documents, each "<crc32 hex> <json>"
    reserve             zeros: disk space set aside for maintenance writes (``reserve_bytes``)
    .*.tmp              a file being written; removed at open

Each journal line holds a serial number ``n`` and the changes of one TinyDB operation (documents
set in full, documents deleted, tables created or dropped); each snapshot records the serial it
includes, so replaying the journal after a crash skips what a snapshot already holds. A torn
last line (a crash in the middle of an append) is cut off at open: its change was never
acknowledged to the caller. A damaged line in the middle (bad media) is reported, the journal is
kept aside for inspection and the lines after it are still applied.

The cost of a change does not grow with the size of the database: only the table TinyDB rebuilt
is compared with its previous version (TinyDB builds a new dict for the table it modifies and
hands the others over untouched), so callers should keep tables small (the outbox splits records
into segments of ``agent.outbox.SEGMENT_SIZE``, 250 records). Documents modified in place by
``Table.update`` are noticed through the document class this storage hands to TinyDB; values
nested inside a document must not be mutated in place (TinyDB's own operations never do).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import (
    ItemsView,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from tinydb.storages import Storage

from agent.errors import OutboxError

log = logging.getLogger(__name__)

JOURNAL = "journal"
RESERVE = "reserve"
_TABLE_PREFIX = "t-"
_TABLE_SUFFIX = ".json"
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_MAX_DIRTY = 16
"""Compact also when this many tables changed since the last compaction (bounds memory)."""


class JournalCorruptError(OutboxError):
    """A snapshot file of the storage is damaged; the message names it."""


def is_disk_full(exc: OSError) -> bool:
    """Whether ``exc`` means there is no room left (disk full, quota, file size limit)."""
    return exc.errno in _NO_SPACE


class FileOps:
    """The system calls that put bytes on disk. Tests subclass it to inject failures."""

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


@dataclass
class StorageStats:
    """What the storage did since it was opened (for benchmarks and diagnostics)."""

    writes: int = 0
    journal_bytes: int = 0
    snapshot_bytes: int = 0
    syncs: int = 0
    compactions: int = 0
    torn_bytes_dropped: int = 0
    corrupt_lines: int = 0

    @property
    def bytes_written(self) -> int:
        return self.journal_bytes + self.snapshot_bytes


class _Doc(dict[str, Any]):
    """A stored document that remembers being changed in place (``Table.update``)."""

    __slots__ = ()
    _touched: ClassVar[dict[int, tuple[_Doc, dict[str, Any]]]]

    def _touch(self) -> None:
        if id(self) not in self._touched:
            self._touched[id(self)] = (self, dict(self))

    def __setitem__(self, key: str, value: Any) -> None:
        self._touch()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._touch()
        super().__delitem__(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._touch()
        super().update(*args, **kwargs)

    def pop(self, *args: Any) -> Any:
        self._touch()
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self._touch()
        return super().popitem()

    def clear(self) -> None:
        self._touch()
        super().clear()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._touch()
        return super().setdefault(key, default)

    def __ior__(self, other: Any) -> _Doc:  # type: ignore[override,misc]
        self._touch()
        super().update(other)
        return self


class _ColdTable(Mapping[str, Any]):
    """A table whose documents are only on disk (in its snapshot file) until first used."""

    __slots__ = ("_name", "_storage")

    def __init__(self, storage: JournalStorage, name: str) -> None:
        self._storage = storage
        self._name = name

    def _docs(self) -> dict[str, Any]:
        return self._storage._warm(self._name)

    def __getitem__(self, key: str) -> Any:
        return self._docs()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._docs())

    def __len__(self) -> int:
        return len(self._docs())

    def get(self, key: str, default: Any = None) -> Any:
        return self._docs().get(key, default)

    def keys(self) -> KeysView[str]:
        return self._docs().keys()

    def items(self) -> ItemsView[str, Any]:
        return self._docs().items()

    def values(self) -> ValuesView[Any]:
        return self._docs().values()


class _TablesView(MutableMapping[str, Any]):
    """What ``read`` hands to TinyDB: the live tables, with TinyDB's changes kept aside.

    TinyDB reads the whole database, replaces one table (or deletes one) and writes the whole
    database back; with this view, ``write`` finds what changed without looking at every table,
    so the cost of a change does not grow with the number of tables.
    """

    __slots__ = ("_base", "deleted", "replaced")

    def __init__(self, base: dict[str, Any]) -> None:
        self._base = base
        self.replaced: dict[str, Any] = {}
        self.deleted: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        if name in self.replaced:
            return self.replaced[name]
        if name in self.deleted:
            raise KeyError(name)
        return self._base[name]

    def __setitem__(self, name: str, table: Any) -> None:
        self.replaced[name] = table
        self.deleted.discard(name)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.replaced.pop(name, None)
        if name in self._base:
            self.deleted.add(name)

    def __contains__(self, name: object) -> bool:
        if name in self.replaced:
            return True
        return name not in self.deleted and name in self._base

    def __iter__(self) -> Iterator[str]:
        for name in list(self._base):
            if name not in self.deleted and name not in self.replaced:
                yield name
        yield from list(self.replaced)

    def __len__(self) -> int:
        added = sum(1 for name in self.replaced if name not in self._base)
        return len(self._base) - len(self.deleted) + added


def encode_line(obj: Any) -> bytes:
    """One checksummed line: CRC-32 of the JSON in hex, a space, the JSON, a newline."""
    payload = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_line(line: bytes) -> Any | None:
    """The object in a line written by ``encode_line`` (without its newline), or None if damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        return json.loads(payload)
    except ValueError:
        return None


@dataclass
class _Transaction:
    tables: dict[str, Any]
    used: OrderedDict[str, None]
    dirty: set[str]
    dropped: set[str]
    ops: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JournalLine:
    start: int
    end: int
    entry: dict[str, Any] | None
    """None when the line is damaged or torn."""


def scan_journal(data: bytes) -> Iterator[JournalLine]:
    """Split journal bytes into lines with their offsets; a last line without newline is torn."""
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        entry = decode_line(data[pos:nl]) if nl >= 0 else None
        yield JournalLine(pos, end, entry if isinstance(entry, dict) else None)
        pos = end


def table_file(name: str) -> str:
    return _TABLE_PREFIX + quote(name, safe="") + _TABLE_SUFFIX


class JournalStorage(Storage):
    """TinyDB storage in a folder: per-table snapshots plus a journal synced on every change.

    Args:
        path: the storage folder (created if missing). If ``path`` is a file written by TinyDB's
            ``JSONStorage``, its tables are imported and the file is removed.
        compact_bytes: compact once the journal grows past this many bytes.
        cache_tables: keep at most this many unchanged tables in memory; the others are read
            from their snapshot file when TinyDB next uses them (None: keep everything, as
            TinyDB's own storages do). Call ``trim`` between operations to apply it.
        reserve_bytes: disk space set aside (a file of zeros) for maintenance writes: when the
            disk is full, writes inside ``maintenance()`` (acknowledgements, purges, counters)
            and compactions release the reserve and go on, while other writes fail with
            ``ENOSPC`` until there is room for the reserve again. 0: no reserve.
        file_ops: the system calls used to write (tests inject ``ENOSPC`` here).

    ``write`` returns only after the change is on disk (``fdatasync``), except inside
    ``relaxed()``, where the change is written but not synced (for changes that may be lost
    in a power cut without harm, such as acknowledgements that will simply come again). A
    failed write leaves nothing behind: the partial line is cut off, documents changed in place
    are restored and the exception propagates. Needs a POSIX file system; one process at a time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compact_bytes: int = 1 << 20,
        cache_tables: int | None = None,
        reserve_bytes: int = 0,
        file_ops: FileOps | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.compact_bytes = compact_bytes
        self.cache_tables = cache_tables
        self.reserve_bytes = reserve_bytes
        self.low_space = False
        """The disk is (nearly) full: only maintenance writes are accepted."""
        self._maintenance = 0
        self.stats = StorageStats()
        self._ops = file_ops or FileOps()
        self._lock = threading.RLock()
        self._touched: dict[int, tuple[_Doc, dict[str, Any]]] = {}
        self._doc_cls: type[_Doc] = type(
            "_Doc", (_Doc,), {"__slots__": (), "_touched": self._touched}
        )
        self._tables: dict[str, dict[str, Any] | _ColdTable] = {}
        self._used: OrderedDict[str, None] = OrderedDict()  # tables in memory, least recent first
        self._serial = 0
        self._dirty: set[str] = set()
        self._dropped: set[str] = set()
        self._relaxed = 0
        self._unsynced = False
        self._next_compact = compact_bytes
        self._compact_failed_at: int | None = None
        self._broken: OSError | None = None
        self._journal_fd = -1
        self._journal_size = 0
        self._txn: _Transaction | None = None
        legacy = self._take_legacy_file()
        self.path.mkdir(parents=True, exist_ok=True)
        self._load()
        if legacy is not None:
            self._import_legacy(*legacy)
        self._make_reserve()

    # -- TinyDB's Storage interface -------------------------------------------------------

    def read(self) -> MutableMapping[str, Any] | None:  # type: ignore[override]
        # TinyDB only indexes, assigns, deletes and iterates what read() returns.
        with self._lock:
            return _TablesView(self._tables)

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            if self._broken is not None:
                raise OSError(self._broken.errno, f"storage unusable: {self._broken}")
            if isinstance(data, _TablesView) and data._base is self._tables:
                ops, changed = self._diff(data.replaced)
                dropped = [name for name in data.deleted if name in self._tables]
            else:  # a plain dict (e.g. TinyDB.drop_tables): compare everything
                ops, changed = self._diff(data)
                dropped = [name for name in self._tables if name not in data]
            ops.extend(["T", name] for name in dropped)
            if self._txn is not None:
                self._txn.ops.extend(ops)
                self._adopt(data, ops, changed, dropped, keep_touched=True)
                return
            if not ops:
                self._adopt(data, ops, changed, dropped)
                return
            self._commit(ops)
            self._adopt(data, ops, changed, dropped)
            self._after_write()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every write inside the block one journal line: all of it is stored or none.

        If the block raises, or the line cannot be written, the tables are restored to what
        they were before the block and the exception propagates.
        """
        with self._lock:
            if self._txn is not None:  # nested: part of the outer transaction
                yield
                return
            txn = self._txn = _Transaction(
                tables=dict(self._tables),
                used=OrderedDict(self._used),
                dirty=set(self._dirty),
                dropped=set(self._dropped),
            )
            try:
                yield
                self._txn = None
                if txn.ops:
                    self._commit(txn.ops)
            except BaseException:
                self._txn = None
                self._tables, self._used = txn.tables, txn.used
                self._dirty, self._dropped = txn.dirty, txn.dropped
                self._rollback_docs()
                raise
            self._touched.clear()
            if txn.ops:
                self._after_write()

    def _commit(self, ops: list[list[Any]]) -> None:
        serial = self._serial + 1
        line = encode_line({"n": serial, "ops": ops})
        try:
            if self.low_space and not self._maintenance and not self._make_reserve():
                raise OSError(errno.ENOSPC, "disk full (the space left is kept for maintenance)")
            try:
                self._append(line)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self._disk_full()
                if not (self._maintenance and self._release_reserve()):
                    raise
                self._append(line)
        except OSError:
            self._rollback_docs()
            raise
        self._serial = serial
        self.stats.writes += 1

    def _after_write(self) -> None:
        many_dirty = len(self._dirty) > _MAX_DIRTY and (
            self._compact_failed_at is None
            or self._journal_size >= self._compact_failed_at + self.compact_bytes // 8
        )
        # On a full disk, compaction waits for a purge (which frees space and compacts).
        if not self.low_space and (self._journal_size >= self._next_compact or many_dirty):
            self.compact()
        self.trim()

    def close(self) -> None:
        with self._lock:
            if self._journal_fd >= 0:
                if self._unsynced:
                    with contextlib.suppress(OSError):
                        self._ops.fdatasync(self._journal_fd)
                os.close(self._journal_fd)
                self._journal_fd = -1

    # -- extras ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def relaxed(self) -> Iterator[None]:
        """Writes inside this block are appended but not synced (the next synced write or a
        compaction makes them durable); use only for changes whose loss is harmless."""
        with self._lock:
            self._relaxed += 1
        try:
            yield
        finally:
            with self._lock:
                self._relaxed -= 1

    @contextlib.contextmanager
    def maintenance(self) -> Iterator[None]:
        """Writes inside this block may use the space reserve when the disk is full (they are
        what frees space: acknowledgements, purges; or what must never stop: counters)."""
        with self._lock:
            self._maintenance += 1
        try:
            yield
        finally:
            with self._lock:
                self._maintenance -= 1

    def sync(self) -> None:
        """Make relaxed writes durable now."""
        with self._lock:
            if self._unsynced and self._journal_fd >= 0:
                self._ops.fdatasync(self._journal_fd)
                self.stats.syncs += 1
                self._unsynced = False

    @property
    def journal_size(self) -> int:
        return self._journal_size

    def tables_in_memory(self) -> int:
        with self._lock:
            return sum(1 for t in self._tables.values() if not isinstance(t, _ColdTable))

    def trim(self) -> None:
        """Drop unchanged tables from memory beyond ``cache_tables``, least recently used first
        (changed tables stay until the next compaction has written them).

        Safe between TinyDB operations only (an operation in progress may hold a table).
        """
        with self._lock:
            if self.cache_tables is None:
                return
            clean = [name for name in self._used if name not in self._dirty]
            for name in clean[: max(0, len(clean) - self.cache_tables)]:
                self._tables[name] = _ColdTable(self, name)
                del self._used[name]

    def compact(self, *, full: bool = False) -> bool:
        """Write changed tables to their snapshot files and empty the journal.

        Returns False (and keeps the journal, which is still complete) if a file could not be
        written, e.g. for lack of space; the caller's data is never at risk.
        """
        with self._lock:
            # The space reserve is for the journal lines that free space; a compaction first
            # needs room for new snapshot files, so it only runs in the space that is free.
            error = self._compact(full)
            if error is None and self.low_space:
                self._make_reserve()
            return error is None

    def _compact(self, full: bool) -> OSError | None:
        with self._lock:
            names = set(self._tables) if full else self._dirty & set(self._tables)
            try:
                # Dropped tables first: that frees space (their drop is in the journal).
                existing = {table_file(n) for n in self._tables}
                stale = (
                    {f.name for f in self.path.glob(f"{_TABLE_PREFIX}*{_TABLE_SUFFIX}")}
                    if full
                    else {table_file(n) for n in self._dropped}
                )
                for fname in stale - existing:
                    with contextlib.suppress(FileNotFoundError):
                        (self.path / fname).unlink()
                snapshots = [
                    (name, self._encode_snapshot(name, table))
                    for name in sorted(names)
                    if not isinstance(table := self._tables[name], _ColdTable)  # cold: current
                ]
                if self.low_space:
                    self._room_for(sum(len(data) for _, data in snapshots))
                for name, data in snapshots:
                    self._write_snapshot(name, data)
                self._fsync_dir()
                os.ftruncate(self._journal_fd, 0)
                self._ops.fsync(self._journal_fd)
            except OSError as exc:
                if not (is_disk_full(exc) and self.low_space):
                    log.warning("compaction postponed (the journal stays complete): %s", exc)
                self._next_compact = self._journal_size + self.compact_bytes
                self._compact_failed_at = self._journal_size
                return exc
            self.stats.syncs += 1
            self.stats.compactions += 1
            self._journal_size = 0
            self._unsynced = False
            self._next_compact = self.compact_bytes
            self._compact_failed_at = None
            self._dirty.clear()
            self._dropped.clear()
            return None

    # -- writing --------------------------------------------------------------------------

    def _diff(self, data: Mapping[str, Any]) -> tuple[list[list[Any]], list[str]]:
        ops: list[list[Any]] = []
        changed: list[str] = []
        touched = self._touched
        for name, table in data.items():
            old = self._tables.get(name)
            if table is old or isinstance(table, _ColdTable):
                continue
            changed.append(name)
            if old is None:
                old = {}
                if not table:
                    ops.append(["c", name])
            if touched or len(table) <= 64:
                # Documents changed in place, or a table small enough to compare in full.
                for key, doc in table.items():
                    if doc is not old.get(key) or id(doc) in touched:
                        ops.append(["s", name, key, doc])
            else:
                # TinyDB only adds and removes documents here: compare the ids.
                ops.extend(["s", name, key, table[key]] for key in table.keys() - old.keys())
            ops.extend(["d", name, key] for key in old.keys() - table.keys())
        return ops, changed

    def _adopt(
        self,
        data: Mapping[str, dict[str, Any]],
        ops: list[list[Any]],
        changed: list[str],
        dropped: list[str],
        *,
        keep_touched: bool = False,
    ) -> None:
        cls = self._doc_cls
        for op in ops:
            if op[0] == "s" and type(op[3]) is not cls:
                data[op[1]][op[2]] = cls(op[3])
        for name in changed:
            self._tables[name] = data[name]
            self._dirty.add(name)
            self._dropped.discard(name)
            self._used[name] = None
            self._used.move_to_end(name)
        for name in dropped:
            del self._tables[name]
            self._used.pop(name, None)
            self._dirty.discard(name)
            self._dropped.add(name)
        if not keep_touched:
            self._touched.clear()

    def _rollback_docs(self) -> None:
        for doc, original in self._touched.values():
            dict.clear(doc)
            dict.update(doc, original)
        self._touched.clear()

    def _append(self, line: bytes) -> None:
        fd, start = self._journal_fd, self._journal_size
        try:
            self._write_all(fd, line)
            if self._relaxed:
                self._unsynced = True
            else:
                self._ops.fdatasync(fd)
                self.stats.syncs += 1
                self._unsynced = False
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError as exc:  # the journal's end is unknown: refuse further writes
                self._broken = exc
            raise
        self._journal_size = start + len(line)
        self.stats.journal_bytes += len(line)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._ops.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            view = view[n:]

    def _encode_snapshot(self, name: str, table: Mapping[str, Any]) -> bytes:
        header = encode_line({"n": self._serial, "name": name, "count": len(table)})
        return header + encode_line(table)

    def _room_for(self, size: int) -> None:
        """On a full disk, let a compaction that needs ``size`` bytes use the reserve, if the
        reserve makes it fit: emptying the journal afterwards gives more back than it took."""
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        margin = 64 * 1024
        if free < size + margin and free + self.reserve_bytes >= size + margin:
            self._release_reserve()

    def _write_snapshot(self, name: str, data: bytes) -> None:
        final = self.path / table_file(name)
        tmp = self.path / f".{final.name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                self._write_all(fd, data)
                self._ops.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.stats.snapshot_bytes += len(data)
        self.stats.syncs += 1

    def _make_reserve(self) -> bool:
        """Set the space reserve aside (again) if there is room; False if the disk is full."""
        if self.reserve_bytes <= 0:
            self.low_space = False
            return True
        reserve = self.path / RESERVE
        present = reserve.exists() and reserve.stat().st_size >= self.reserve_bytes
        if self.low_space:
            # Room for the reserve, and as much again for records: otherwise still full.
            st = os.statvfs(self.path)
            if st.f_bavail * st.f_frsize < self.reserve_bytes * (1 if present else 2):
                return False  # still full: keep refusing without trying to write
        if not present:
            tmp = self.path / f".{RESERVE}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    zeros = bytes(min(self.reserve_bytes, 1 << 16))
                    left = self.reserve_bytes
                    while left > 0:
                        self._write_all(fd, zeros[:left])
                        left -= len(zeros)
                    self._ops.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, reserve)
                self._fsync_dir()
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                if not is_disk_full(exc):
                    raise
                self._disk_full()
                return False
        if self.low_space:
            log.info("disk space is back: records are accepted again")
        self.low_space = False
        return True

    def _disk_full(self) -> None:
        if not self.low_space:
            log.warning("disk full: only acknowledgements, purges and counters are written now")
        self.low_space = True

    def _release_reserve(self) -> bool:
        """Free the space reserve for a maintenance write; False if there was none."""
        reserve = self.path / RESERVE
        if self.reserve_bytes <= 0 or not reserve.exists():
            return False
        reserve.unlink()
        with contextlib.suppress(OSError):
            self._fsync_dir()
        self._disk_full()
        return True

    def _fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._ops.fsync(fd)
        finally:
            os.close(fd)

    # -- reading --------------------------------------------------------------------------

    def _warm(self, name: str) -> dict[str, Any]:
        """The documents of ``name``, read from its snapshot file if they are not in memory."""
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                return {}
            if isinstance(table, _ColdTable):
                f = self.path / table_file(name)
                with f.open("rb") as fh:
                    fh.readline()
                    docs = decode_line(fh.readline().rstrip(b"\n"))
                if not isinstance(docs, dict):
                    raise JournalCorruptError(f"outbox table file {f} is damaged")
                cls = self._doc_cls
                table = self._tables[name] = {k: cls(v) for k, v in docs.items()}
            self._used[name] = None
            self._used.move_to_end(name)
            return table

    def _hot(self, name: str) -> dict[str, Any]:
        if name not in self._tables:
            self._tables[name] = {}
        return self._warm(name)

    def _load(self) -> None:
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink()
        serial_of: dict[str, int] = {}
        for f in sorted(self.path.glob(f"{_TABLE_PREFIX}*{_TABLE_SUFFIX}")):
            with f.open("rb") as fh:
                header = decode_line(fh.readline().rstrip(b"\n"))
            if not isinstance(header, dict) or "name" not in header:
                raise JournalCorruptError(f"outbox table file {f} is damaged")
            name = str(header["name"])
            self._tables[name] = _ColdTable(self, name)
            serial_of[name] = int(header["n"])
        self._serial = max(serial_of.values(), default=0)
        journal = self.path / JOURNAL
        data = journal.read_bytes() if journal.exists() else b""
        good_end, damaged = 0, []
        for line in scan_journal(data):
            if line.entry is None:
                damaged.append(line)
                continue
            self._replay(line.entry, serial_of)
            good_end = line.end
        middle = [d for d in damaged if d.end <= good_end]
        self._journal_fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._journal_size = len(data)
        if good_end < len(data):
            torn = len(data) - good_end
            log.warning("outbox journal: ignoring a torn last write of %d bytes", torn)
            self.stats.torn_bytes_dropped += torn
            os.ftruncate(self._journal_fd, good_end)
            self._ops.fsync(self._journal_fd)
            self._journal_size = good_end
        if middle:
            kept = self.path / f"journal.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
            kept.write_bytes(data)
            self.stats.corrupt_lines += len(middle)
            log.error(
                "outbox journal: %d damaged line(s) before the end (bad storage?); the lines "
                "after them were applied; the journal is kept as %s",
                len(middle),
                kept,
            )
            self.compact(full=True)
        elif self._journal_size >= self.compact_bytes or len(self._dirty) > _MAX_DIRTY:
            self.compact()
        self.trim()

    def _replay(self, entry: dict[str, Any], serial_of: dict[str, int]) -> None:
        n = int(entry["n"])
        self._serial = max(self._serial, n)
        for op in entry["ops"]:
            kind, name = op[0], op[1]
            if n <= serial_of.get(name, 0):
                continue  # the table's snapshot already holds this change
            if kind == "T":
                self._tables.pop(name, None)
                self._used.pop(name, None)
                self._dirty.discard(name)
                self._dropped.add(name)
                continue
            table = self._hot(name)
            self._dirty.add(name)
            if kind == "s":
                table[op[2]] = self._doc_cls(op[3])
            elif kind == "d":
                table.pop(op[2], None)

    def _take_legacy_file(self) -> tuple[Path, dict[str, Any]] | None:
        if not self.path.is_file():
            return None
        aside = self.path.with_name(self.path.name + ".legacy")
        try:
            text = self.path.read_text(encoding="utf-8")
            tables = json.loads(text) if text.strip() else {}
        except (OSError, ValueError) as exc:
            raise JournalCorruptError(
                f"{self.path} is a file but not a readable TinyDB JSON database: {exc}"
            ) from exc
        os.replace(self.path, aside)
        return aside, tables

    def _import_legacy(self, aside: Path, tables: dict[str, Any]) -> None:
        for name, docs in tables.items():
            self._tables[name] = {str(k): self._doc_cls(v) for k, v in docs.items()}
            self._used[name] = None
        self.compact(full=True)
        aside.unlink()
        self.trim()
        log.info("imported the TinyDB JSON outbox into %s", self.path)
