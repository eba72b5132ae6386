"""The station's outbox: every record stays here until the server acknowledges it.

Records live in TinyDB tables of ``SEGMENT_SIZE`` records each (``records.<seq // 250>``,
document id = seq), so that a change touches one small table whatever the backlog. An
acknowledgement adds the seq to ``acked.<segment>`` with the time it arrived; acknowledged
records are kept for the retention time and then purged (they hold personal data), oldest
segments first. ``meta`` holds the counters: the highest seq ever handed out (``last_seq``),
the birth/death sequence (``bd_seq``) and whether the seq floor is known (see ``ready``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from agent.errors import OutboxError, OutboxFullError, OutboxNotReadyError
from agent.journal import JournalStorage, is_disk_full
from protocol import Record

log = logging.getLogger(__name__)

SEGMENT_SIZE = 250
CACHE_TABLES = 8
"""Unchanged tables kept in memory; the backlog's other segments stay on disk until needed."""
RESERVE_BYTES = 256 * 1024
"""Disk space kept for acknowledgements, purges and compactions, so that a full station can
recover (at least this, and at least the compaction size)."""
_META = "meta"
_HISTORY = "history"
_RECORDS = "records."
_LEGACY_RECORDS = "records"
_ACKED = "acked."


def _segment(seq: int) -> int:
    return seq // SEGMENT_SIZE


class TinyDbOutbox:
    """Outbox kept in TinyDB on a crash-safe ``JournalStorage``.

    Args:
        path: the outbox folder (see ``agent.journal``).
        capacity: the most records kept, unacknowledged plus acknowledged ones awaiting their
            purge. When it is reached, acknowledged records are purged early; if every record
            kept is unacknowledged, ``append`` raises ``OutboxFullError`` and stores nothing.
        warn_at_pct: ``nearly_full`` turns true when unacknowledged records reach this
            percentage of ``capacity``.
        wall: the wall clock (acknowledgement times, retention).
        storage: a TinyDB ``Storage`` class; ``storage_args`` are passed to it.

    Thread-safe: the station loop writes, a heartbeat may read the depth.

    Sequence numbers: ``last_seq`` never goes back, also after acknowledged records are purged.
    A new outbox (no file yet) does not know where the station's sequence stopped before (the
    station may have been reinstalled), so it is not ``ready`` until ``learn_seq_floor`` gives
    it the highest seq the server holds; until then ``append`` raises ``OutboxNotReadyError``.
    """

    def __init__(
        self,
        path: Path,
        *,
        capacity: int = 100_000,
        warn_at_pct: float = 80.0,
        wall: Callable[[], float] = time.time,
        storage: type[Storage] = JournalStorage,
        storage_args: dict[str, Any] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.capacity = capacity
        self.warn_at_pct = warn_at_pct
        self._wall = wall
        if storage_args is None:
            storage_args = {}
        if storage is JournalStorage:
            compact = int(storage_args.get("compact_bytes", 1 << 20))
            storage_args = {
                "cache_tables": CACHE_TABLES,
                "reserve_bytes": max(RESERVE_BYTES, compact),
                **storage_args,
            }
        try:
            self._db = TinyDB(path, storage=storage, **storage_args)
        except (OSError, ValueError) as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        self._meta = self._db.table(_META, cache_size=0)
        self._history = self._db.table(_HISTORY, cache_size=0)
        self._history_seqs = {doc.doc_id for doc in self._history.all()}
        self._tables: dict[str, Table] = {}
        self._pending: dict[int, set[int]] = {}  # segment -> seqs not acknowledged
        self._ids: dict[str, int] = {}  # record id -> seq, of pending records
        self._acked: dict[int, dict[int, float]] = {}  # segment -> seq -> acknowledged at
        self._acked_count = 0
        self._last_seq = 0
        self._load()

    # -- the Outbox port ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether sequence numbers can be handed out (the seq floor is known)."""
        with self._lock:
            return bool(self._meta_doc().get("seq_floor_known", False))

    def append(self, record: Record) -> None:
        """Store ``record`` durably (synced to disk when this returns); see ``append_many``."""
        self.append_many([record])

    def append_many(self, records: Sequence[Record]) -> None:
        """Store ``records`` durably and atomically: all of them, or none.

        Raises:
            OutboxNotReadyError: the seq floor is not known yet.
            OutboxFullError: capacity reached, or the disk is full; nothing was stored.
            OutboxError: the records could not be stored for another reason.
        """
        if not records:
            return
        with self._lock:
            if not self.ready:
                raise OutboxNotReadyError("the outbox does not know the station's seq floor yet")
            last = self._last_seq
            for r in records:
                if r.seq <= last:
                    raise OutboxError(f"seq {r.seq} is not above the last seq {last}")
                last = r.seq
            if len(self._ids) + self._acked_count + len(records) > self.capacity:
                self._purge_locked(lambda at: True, limit=len(records) + SEGMENT_SIZE)
            if len(self._ids) + len(records) > self.capacity:
                raise OutboxFullError(f"outbox holds {len(self._ids)} unacknowledged records")
            seqs = ", ".join(str(r.seq) for r in records)
            try:
                try:
                    self._insert(records)
                except OSError as exc:
                    if not (is_disk_full(exc) and self._acked_count):
                        raise
                    # Delivered records may go early when the disk is full; then try again.
                    log.warning("disk full: purging acknowledged records early")
                    self._purge_locked(lambda at: True)
                    self._insert(records)
            except OSError as exc:
                if is_disk_full(exc):
                    raise OutboxFullError(f"disk full: record(s) {seqs} not stored") from exc
                raise OutboxError(f"cannot store record(s) {seqs}: {exc}") from exc
            except ValueError as exc:
                raise OutboxError(f"cannot store record(s) {seqs}: {exc}") from exc
            for r in records:
                self._pending.setdefault(_segment(r.seq), set()).add(r.seq)
                self._ids[r.record_id] = r.seq
            self._last_seq = last

    def _insert(self, records: Sequence[Record]) -> None:
        with self._transaction():
            for r in records:
                doc = Document(r.model_dump(mode="json"), doc_id=r.seq)
                self._table(_RECORDS, _segment(r.seq)).insert(doc)

    def pending(self, limit: int | None = None, *, after_seq: int = 0) -> list[Record]:
        """Unacknowledged records with a seq above ``after_seq``, in sequence order."""
        out: list[Record] = []
        with self._lock:
            seg, docs = -1, None
            for seq in self._pending_seqs(after_seq):
                if limit is not None and len(out) >= limit:
                    break
                if _segment(seq) != seg:
                    seg = _segment(seq)
                    docs = self._raw(_RECORDS + str(seg))
                doc = docs.get(str(seq)) if docs is not None else None
                if doc is None:
                    raise OutboxError(f"outbox index and storage disagree on seq {seq}")
                out.append(Record.model_validate(doc))
            self._trim()
        return out

    def acknowledge(self, record_ids: Iterable[str]) -> list[str]:
        """Mark these records delivered; returns the ids of those that were pending.

        The acknowledgement is written but not synced: if it is lost in a power cut, the
        records are sent again and the server acknowledges them again.
        """
        with self._lock:
            found = {rid: s for rid in record_ids if (s := self._ids.get(rid)) is not None}
            if not found:
                return []
            now = self._wall()
            by_seg: dict[int, list[int]] = {}
            for seq in sorted(found.values()):
                by_seg.setdefault(_segment(seq), []).append(seq)
            done: list[str] = []
            seqs_done: set[int] = set()
            try:
                with self._relaxed(), self._maintenance():
                    for seg, part in by_seg.items():
                        self._table(_ACKED, seg).insert_multiple(
                            Document({"at": now}, doc_id=s) for s in part
                        )
                        pending = self._pending[seg]
                        pending.difference_update(part)
                        if not pending:
                            del self._pending[seg]
                        self._acked.setdefault(seg, {}).update(dict.fromkeys(part, now))
                        self._acked_count += len(part)
                        seqs_done.update(part)
            except (OSError, ValueError) as exc:
                raise OutboxError(f"cannot record an acknowledgement: {exc}") from exc
            finally:
                for rid, seq in found.items():
                    if seq in seqs_done:
                        del self._ids[rid]
                        done.append(rid)
            self._trim()
        return done

    def last_seq(self) -> int:
        """The highest seq ever stored or learnt from the server (0 for a new station)."""
        with self._lock:
            return self._last_seq

    def next_counter(self, name: str) -> int:
        """Durably increment and return a named counter (e.g. the birth/death sequence)."""
        with self._lock:
            value = int(self._meta_doc().get(name, 0)) + 1
            self._set_meta({name: value})
            return value

    def learn_seq_floor(self, max_seq: int) -> bool:
        """Take in the highest seq the server holds for this station.

        Makes a new outbox ``ready``. If the server holds a seq above ours (an outbox restored
        from an old copy), our counter jumps past it so no seq is ever used twice. Returns True
        if anything changed.
        """
        with self._lock:
            ready = self.ready
            if ready and max_seq <= self._last_seq:
                return False
            if ready:
                log.error(
                    "the server holds seq %d but this outbox only reached %d (restored from an "
                    "old copy?): continuing after %d",
                    max_seq,
                    self._last_seq,
                    max_seq,
                )
            last = max(self._last_seq, max_seq)
            self._set_meta({"seq_floor_known": True, "last_seq": last})
            self._last_seq = last
            return True

    def purge(self, acked_before: float) -> int:
        """Delete acknowledged records acknowledged before ``acked_before`` (wall clock)."""
        with self._lock:
            return self._purge_locked(lambda at: at < acked_before)

    def oldest_pending_time(self) -> float | None:
        """Wall time of the oldest unacknowledged record, if any."""
        with self._lock:
            first = next(self._pending_seqs(0), None)
            if first is None:
                return None
            doc = self._table(_RECORDS, _segment(first)).get(doc_id=first)
            return float(doc["wall_time"]) if doc is not None else None

    @property
    def nearly_full(self) -> bool:
        with self._lock:
            return len(self._ids) >= self.capacity * self.warn_at_pct / 100

    @property
    def acked_kept(self) -> int:
        """Acknowledged records still kept (waiting for their purge)."""
        with self._lock:
            return self._acked_count

    @property
    def storage(self) -> Storage:
        return self._db.storage

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def ensure_seq_floor(self, seq: int) -> None:
        """Make the next record's ``seq`` greater than ``seq`` (provisioning hands over the
        highest seq the server holds for a re-provisioned station id)."""
        self.learn_seq_floor(seq)

    def station_ids(self) -> set[str]:
        """The station ids of the records still waiting."""
        return {r.station_id for r in self.pending()}

    # SessionHistory: copies of the records the workflow needs after a restart (a table of
    # its own; document id = seq). Acknowledging and purging never touch it; the station prunes
    # it through ``forget``, so it stays as small as the open session.

    def remember(self, records: Iterable[Record]) -> None:
        with self._lock:
            new = {r.seq: r for r in records if r.seq not in self._history_seqs}
            if not new:
                return
            try:
                self._history.insert_multiple(
                    Document(r.model_dump(mode="json"), doc_id=seq) for seq, r in new.items()
                )
            except (OSError, ValueError) as exc:
                raise OutboxError(f"cannot keep session history: {exc}") from exc
            self._history_seqs.update(new)

    def remembered(self) -> list[Record]:
        with self._lock:
            docs = sorted(self._history.all(), key=lambda d: d.doc_id)
        return [Record.model_validate(dict(d)) for d in docs]

    def forget(self, seqs: Iterable[int]) -> None:
        with self._lock:
            ids = self._history_seqs.intersection(seqs)
            if not ids:
                return
            try:
                self._history.remove(doc_ids=ids)
            except (OSError, ValueError) as exc:
                raise OutboxError(f"cannot prune session history: {exc}") from exc
            self._history_seqs -= ids

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TinyDbOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _load(self) -> None:
        if _LEGACY_RECORDS in self._db.tables():
            self._migrate_legacy()
        names = self._db.tables()
        for name in names:
            if name.startswith(_ACKED):
                seg = int(name[len(_ACKED) :])
                self._acked[seg] = {int(k): float(v["at"]) for k, v in self._raw(name).items()}
        records_max = 0
        orphans: dict[int, list[int]] = {
            seg: list(acked)
            for seg, acked in self._acked.items()
            if _RECORDS + str(seg) not in names
        }
        for name in sorted(n for n in names if n.startswith(_RECORDS)):
            seg = int(name[len(_RECORDS) :])
            acked = self._acked.get(seg, {})
            pending = self._pending.setdefault(seg, set())
            docs = self._raw(name)
            for key, doc in docs.items():
                seq = int(key)
                records_max = max(records_max, seq)
                if seq not in acked:
                    pending.add(seq)
                    self._ids[str(doc["record_id"])] = seq
            if not pending:
                del self._pending[seg]
            lost = [s for s in acked if str(s) not in docs]
            if lost:  # the record was purged, a crash came before its acknowledgement was
                orphans[seg] = lost
            self._trim()
        for seg, gone in orphans.items():
            self._table(_ACKED, seg).remove(doc_ids=gone)
            for s in gone:
                del self._acked[seg][s]
        self._acked = {seg: acked for seg, acked in self._acked.items() if acked}
        self._acked_count = sum(len(a) for a in self._acked.values())
        meta = self._meta_doc()
        self._last_seq = max(int(meta.get("last_seq", 0)), records_max)
        if "seq_floor_known" not in meta:
            # A new outbox knows nothing of a previous install; one with history (an outbox
            # from before this flag existed) knows its own sequence.
            self._set_meta({"seq_floor_known": bool(names - {_META})})

    def _migrate_legacy(self) -> None:
        """Move the records of a walking-skeleton outbox (one ``records`` table) into segments."""
        docs = dict(self._raw(_LEGACY_RECORDS))
        with self._transaction():
            for key, doc in sorted(docs.items(), key=lambda kv: int(kv[0])):
                self._table(_RECORDS, _segment(int(key))).insert(Document(dict(doc), int(key)))
            self._db.drop_table(_LEGACY_RECORDS)
        log.info("moved %d record(s) of an older outbox into segments", len(docs))

    def _raw(self, name: str) -> Mapping[str, Any]:
        tables = self._db.storage.read() or {}
        table: Mapping[str, Any] = tables.get(name, {})
        return table

    def _table(self, prefix: str, seg: int) -> Table:
        name = prefix + str(seg)
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = self._db.table(name, cache_size=0)
        return table

    def _pending_seqs(self, after_seq: int) -> Iterator[int]:
        first = _segment(after_seq)
        for seg in sorted(s for s in self._pending if s >= first):
            for seq in sorted(self._pending[seg]):
                if seq > after_seq:
                    yield seq

    def _meta_doc(self) -> dict[str, Any]:
        return dict(self._meta.get(doc_id=1) or {})

    def _set_meta(self, fields: dict[str, Any]) -> None:
        try:
            with self._maintenance():
                self._write_meta(fields)
        except OSError as exc:
            raise OutboxError(f"cannot update the outbox counters: {exc}") from exc

    def _write_meta(self, fields: dict[str, Any]) -> None:
        if self._meta.contains(doc_id=1):
            self._meta.update(fields, doc_ids=[1])
        else:
            self._meta.insert(Document(fields, doc_id=1))

    def _trim(self) -> None:
        storage = self._db.storage
        if isinstance(storage, JournalStorage):
            storage.trim()

    def _transaction(self) -> AbstractContextManager[None]:
        storage = self._db.storage
        return storage.transaction() if isinstance(storage, JournalStorage) else nullcontext()

    def _maintenance(self) -> AbstractContextManager[None]:
        storage = self._db.storage
        return storage.maintenance() if isinstance(storage, JournalStorage) else nullcontext()

    def _relaxed(self) -> AbstractContextManager[None]:
        storage = self._db.storage
        return storage.relaxed() if isinstance(storage, JournalStorage) else nullcontext()

    def _purge_locked(self, old: Callable[[float], bool], limit: int | None = None) -> int:
        if not self._acked:
            return 0
        meta_last = int(self._meta_doc().get("last_seq", 0))
        if meta_last < self._last_seq:  # purging may remove the highest seq: remember it first
            self._set_meta({"last_seq": self._last_seq})
        try:
            with self._maintenance():
                purged = self._purge_segments(old, limit)
        except OSError as exc:
            raise OutboxError(f"cannot purge acknowledged records: {exc}") from exc
        if purged:
            storage = self._db.storage
            if isinstance(storage, JournalStorage):
                storage.compact()  # so that the purged personal data leaves the files too
            log.info("purged %d acknowledged record(s) from the outbox", purged)
        return purged

    def _purge_segments(self, old: Callable[[float], bool], limit: int | None) -> int:
        purged = 0
        for seg in sorted(self._acked):
            if limit is not None and purged >= limit:
                break
            acked = self._acked[seg]
            gone = [s for s, at in acked.items() if old(at)]
            if not gone:
                continue
            records, acks = self._table(_RECORDS, seg), self._table(_ACKED, seg)
            with self._transaction():
                if len(gone) == len(acked) and seg not in self._pending:
                    self._db.drop_table(records.name)
                    self._db.drop_table(acks.name)
                    self._tables.pop(records.name, None)
                    self._tables.pop(acks.name, None)
                else:
                    records.remove(doc_ids=gone)
                    acks.remove(doc_ids=gone)
            for s in gone:
                del acked[s]
            if not acked:
                del self._acked[seg]
            self._acked_count -= len(gone)
            purged += len(gone)
        return purged
