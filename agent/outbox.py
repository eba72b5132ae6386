"""The station's outbox: every record stays here until the server acknowledges it."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import JSONStorage, Storage
from tinydb.table import Document

from agent.errors import OutboxError, OutboxFullError
from protocol import Record

_RECORDS = "records"
_META = "meta"
_HISTORY = "history"


class TinyDbOutbox:
    """Outbox kept in a TinyDB database; each record's document id is its sequence number.

    Args:
        path: the database file.
        capacity: the most unacknowledged records kept; beyond it ``append`` raises
            ``OutboxFullError`` rather than dropping anything.
        storage: a TinyDB ``Storage`` class (default: TinyDB's ``JSONStorage``).

    Thread-safe: the station loop writes, a heartbeat thread may read the depth.
    """

    def __init__(
        self,
        path: Path,
        *,
        capacity: int = 100_000,
        storage: type[Storage] = JSONStorage,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.capacity = capacity
        try:
            self._db = TinyDB(path, storage=storage)
        except (OSError, ValueError) as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        self._records = self._db.table(_RECORDS, cache_size=0)
        self._meta = self._db.table(_META, cache_size=0)
        self._history = self._db.table(_HISTORY, cache_size=0)
        self._history_seqs = {doc.doc_id for doc in self._history.all()}
        self._seq_by_id: dict[str, int] = {
            str(doc["record_id"]): doc.doc_id for doc in self._records.all()
        }

    def append(self, record: Record) -> None:
        with self._lock:
            if len(self._seq_by_id) >= self.capacity:
                raise OutboxFullError(f"outbox holds {self.capacity} unacknowledged records")
            try:
                self._records.insert(Document(record.model_dump(mode="json"), doc_id=record.seq))
            except (OSError, ValueError) as exc:
                raise OutboxError(f"cannot store record {record.seq}: {exc}") from exc
            self._seq_by_id[record.record_id] = record.seq

    def pending(self, limit: int | None = None) -> list[Record]:
        with self._lock:
            seqs = sorted(self._seq_by_id.values())[:limit]
            docs = [self._records.get(doc_id=s) for s in seqs]
        return [Record.model_validate(_doc(d)) for d in docs if d is not None]

    def acknowledge(self, record_ids: Iterable[str]) -> list[Record]:
        with self._lock:
            seqs = [s for rid in record_ids if (s := self._seq_by_id.get(rid)) is not None]
            if not seqs:
                return []
            docs = [_doc(self._records.get(doc_id=s)) for s in seqs]
            self._bump_meta("last_seq", max(self._last_seq_locked(), max(seqs)))
            self._records.remove(doc_ids=seqs)
            for d in docs:
                self._seq_by_id.pop(str(d["record_id"]), None)
        return [Record.model_validate(d) for d in docs]

    def last_seq(self) -> int:
        with self._lock:
            return self._last_seq_locked()

    def ensure_seq_floor(self, seq: int) -> None:
        """Make the next record's ``seq`` greater than ``seq`` (a re-provisioned station goes on
        after the records the server already holds for its id)."""
        with self._lock:
            if seq > self._last_seq_locked():
                self._bump_meta("last_seq", seq)

    def station_ids(self) -> set[str]:
        """The station ids of the records still waiting."""
        with self._lock:
            return {str(doc["station_id"]) for doc in self._records.all()}

    def next_counter(self, name: str) -> int:
        with self._lock:
            doc: dict[str, Any] = dict(self._meta.get(doc_id=1) or {})
            value = int(doc.get(name, 0)) + 1
            self._bump_meta(name, value)
            return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._seq_by_id)

    # SessionHistory: copies of the records the workflow needs after a restart (a separate
    # table; document id = seq). Acknowledging never touches it.

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

    def _last_seq_locked(self) -> int:
        doc: dict[str, Any] = dict(self._meta.get(doc_id=1) or {})
        return max([int(doc.get("last_seq", 0)), *self._seq_by_id.values()])

    def _bump_meta(self, key: str, value: int) -> None:
        if self._meta.contains(doc_id=1):
            self._meta.update({key: value}, doc_ids=[1])
        else:
            self._meta.insert(Document({key: value}, doc_id=1))


def _doc(doc: Any) -> dict[str, Any]:
    if doc is None:
        raise OutboxError("outbox index and storage disagree")
    return dict(doc)
