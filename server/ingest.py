"""Ingest: MQTT messages from stations -> validated rows -> one commit per batch -> acks.

``classify`` is pure (bytes in, decisions out); ``store_batch`` does the database work in one
transaction (raw records, their projection into the domain tables, station bookkeeping,
rejections); ``MqttIngest`` is the thin adapter that feeds them from the broker and publishes the
acknowledgements after the commit; ``run_worker`` is the body of one ingest worker process.

What is acknowledged (the station may then forget the record):

- a record stored now, or stored before (a resend);
- a record whose envelope is valid but whose ``kind`` is unknown or whose ``data`` does not
  match its kind's schema (``protocol.events.DATA_MODELS``): it is kept in
  ``rejected_messages`` with the reason, its ``record_id`` and ``seq``, never in ``records``.
  Resending it could never make it valid, so it is acknowledged to stop the station resending
  it forever; it is never silently dropped;
- a record whose (station, seq) is already taken by a different record (kept as rejected);
- a record the database refused on its own (a "poison" record, e.g. a value the schema allows
  but a column does not): kept as rejected with the database's reason.

A message that is not a valid record envelope (bad JSON, wrong version, a station id that does
not match the topic, ...) is kept as rejected and not acknowledged: there is no record id to
acknowledge, or it would be acknowledged to the wrong station.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, update
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError, StatementError
from sqlalchemy.orm import Session

from protocol import (
    Ack,
    CommandResult,
    Heartbeat,
    PayloadError,
    Record,
    Status,
    Sync,
    decode,
    encode,
)
from protocol.events import DATA_MODELS
from protocol.messages import MAX_ACK_IDS
from protocol.topics import (
    ParsedTopic,
    StationTopic,
    TopicError,
    parse_station_topic,
    subscription,
    topic,
)
from server.activity import record_activity
from server.bulk import Bulk
from server.metrics import IngestCounters
from server.models import RecordRow, RejectedMessage, StationRow, table
from server.ops import commands as ops_commands
from server.ops.history import sample_row, store_samples
from server.projection import Projected, event_time, project

log = logging.getLogger(__name__)

KEEP_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    """The MQTT packet id to acknowledge to the broker once committed (0: nothing to ack)."""
    connection: int = 0
    """Which broker connection delivered it (packet ids restart on every connection)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    message: Message
    reason: str
    station_id: str | None = None
    record_id: str | None = None
    seq: int | None = None
    collides_with: str | None = None
    """For a record whose (station, seq) is taken: the record_id that holds it."""


@dataclass
class Classified:
    records: list[Record] = field(default_factory=list)
    """Records whose envelope and data are valid."""
    data: dict[str, BaseModel] = field(default_factory=dict)
    """record_id -> the record's ``data`` parsed with its kind's model."""
    invalid: list[Rejection] = field(default_factory=list)
    """Valid envelopes with an unknown kind or invalid data: kept as rejected, acknowledged."""
    statuses: list[tuple[str, Status]] = field(default_factory=list)
    heartbeats: list[tuple[str, Heartbeat]] = field(default_factory=list)
    heartbeats_at: list[datetime] = field(default_factory=list)
    """When each heartbeat arrived (same order as ``heartbeats``)."""
    command_results: list[tuple[str, CommandResult]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    received_at: dict[str, datetime] = field(default_factory=dict)
    payloads: dict[str, bytes] = field(default_factory=dict)
    """record_id -> the record's payload exactly as received (what ``records`` keeps)."""


def _data_reason(kind: str, exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "data"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{kind} data.{where}: {first['msg']}{more}"


_TOPICS: dict[str, ParsedTopic] = {}
"""Topics already parsed (a few per station), so each message does not pay for it again."""


def _parse_topic(name: str) -> ParsedTopic:
    where = parse_station_topic(name)
    if len(_TOPICS) >= 100_000:
        _TOPICS.clear()
    _TOPICS[name] = where
    return where


def classify(messages: Iterable[Message]) -> Classified:
    """Validate each message against the contract; never raises for bad input."""
    out = Classified()
    for m in messages:
        try:
            where = _TOPICS.get(m.topic) or _parse_topic(m.topic)
        except TopicError as exc:
            out.rejections.append(Rejection(m, str(exc)))
            continue
        try:
            match where.kind:
                case StationTopic.RECORDS:
                    record = decode(Record, m.payload)
                    if record.station_id != where.station_id:
                        raise PayloadError(
                            f"station_id {record.station_id!r} does not match the topic's "
                            f"{where.station_id!r}"
                        )
                    model = DATA_MODELS.get(record.kind)
                    if model is None:
                        out.invalid.append(
                            Rejection(
                                m,
                                f"unknown record kind {record.kind!r}",
                                record.station_id,
                                record.record_id,
                                record.seq,
                            )
                        )
                        continue
                    try:
                        data = model.model_validate(record.data)
                    except ValidationError as exc:
                        out.invalid.append(
                            Rejection(
                                m,
                                _data_reason(record.kind, exc),
                                record.station_id,
                                record.record_id,
                                record.seq,
                            )
                        )
                        continue
                    out.records.append(record)
                    out.data[record.record_id] = data
                    out.received_at[record.record_id] = m.received_at
                    out.payloads[record.record_id] = m.payload
                case StationTopic.STATUS:
                    if m.payload:  # an empty retained message clears the topic
                        out.statuses.append((where.station_id, decode(Status, m.payload)))
                case StationTopic.HEARTBEAT:
                    out.heartbeats.append((where.station_id, decode(Heartbeat, m.payload)))
                    out.heartbeats_at.append(m.received_at)
                case StationTopic.COMMAND_RESULTS:
                    result = decode(CommandResult, m.payload)
                    out.command_results.append((where.station_id, result))
                case _:
                    raise PayloadError(f"the server does not accept {where.kind.value} messages")
        except PayloadError as exc:
            out.rejections.append(Rejection(m, exc.reason, where.station_id))
    return out


@dataclass
class Stored:
    """What a committed batch did."""

    acks: dict[str, list[str]] = field(default_factory=dict)
    syncs: dict[str, int] = field(default_factory=dict)
    """Station -> its seq floor, for each station whose birth was in the batch."""
    inserted: int = 0
    duplicates: int = 0
    invalid: int = 0
    rejected: int = 0
    """Rows added to rejected_messages."""
    duplicates_by_station: dict[str, int] = field(default_factory=dict)
    stale_deaths: int = 0
    poison: int = 0
    command_results: int = 0
    collisions: int = 0
    """Records whose (station, seq) was already taken by a different record."""

    def merge(self, other: Stored) -> None:
        for sid, ids in other.acks.items():
            self.acks.setdefault(sid, []).extend(ids)
        self.syncs.update(other.syncs)
        for sid, n in other.duplicates_by_station.items():
            self.duplicates_by_station[sid] = self.duplicates_by_station.get(sid, 0) + n
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.invalid += other.invalid
        self.rejected += other.rejected
        self.stale_deaths += other.stale_deaths
        self.poison += other.poison
        self.command_results += other.command_results
        self.collisions += other.collisions


RECORDS = table(RecordRow)
REJECTED = table(RejectedMessage)
STATIONS = table(StationRow)
RECORD_COLUMNS = (
    "record_id",
    "station_id",
    "seq",
    "boot_id",
    "wall_time",
    "mono_ns",
    "clock_synced",
    "kind",
    "code",
    "payload",
    "received_at",
)
REJECTED_COLUMNS = (
    "received_at",
    "topic",
    "station_id",
    "reason",
    "size",
    "payload",
    "record_id",
    "seq",
    "collides_with",
)
NEW_STATION_COLUMNS = (
    "station_id",
    "state",
    "bd_seq",
    "max_seq",
    "seq_seen",
    "record_count",
    "active",
    "first_seen_at",
    "created_at",
    "updated_at",
)
MAX_DB_INT = 2**63 - 1


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def store_batch(
    engine: Engine,
    batch: Classified,
    *,
    known_stations: set[str] | None = None,
    history_step_s: int = 60,
) -> Stored:
    """Store a classified batch in one transaction; returns what to acknowledge per station.

    Idempotent by ``record_id``: a resent record is acknowledged again, never stored or projected
    twice. A record whose (station, seq) is taken by a different record is kept as a rejected
    message naming the record that holds the seq (``collides_with``), so it is never lost and
    shows in the station's gap report, and acknowledged so the station does not resend it
    forever. ``known_stations`` (ids that have a ``stations`` row) saves a statement per batch;
    it is updated after the commit. Heartbeats also go to the history, one sample per station
    per ``history_step_s``; command results update their command.
    """
    result = Stored()
    now = datetime.now(UTC)
    unique = {r.record_id: r for r in batch.records}  # a resend inside the same batch
    invalid = {r.record_id: r for r in batch.invalid if r.record_id is not None}
    rejections = list(batch.rejections)
    station_ids = {r.station_id for r in unique.values()}
    station_ids |= {r.station_id for r in invalid.values() if r.station_id}
    station_ids |= {s for s, _ in batch.statuses} | {s for s, _ in batch.heartbeats}
    station_ids |= {s for s, _ in batch.command_results}
    new_stations = sorted(station_ids - (known_stations or set()))
    with Session(engine) as session, session.begin():
        bulk = Bulk(session.connection())
        if new_stations:
            at = bulk.ts(now)
            bulk.insert(
                STATIONS,
                NEW_STATION_COLUMNS,
                [(s, "unknown", -1, 0, 0, 0, True, at, at, at) for s in new_stations],
                on_conflict="(station_id) DO NOTHING",
            )
        inserted: set[str] = set()
        collided: list[Record] = []
        if unique:
            rows = [
                _row(bulk, r, batch.payloads.get(r.record_id), batch.received_at[r.record_id])
                for r in unique.values()
            ]
            inserted = {
                rid
                for (rid,) in bulk.insert(
                    RECORDS, RECORD_COLUMNS, rows, on_conflict="DO NOTHING", returning="record_id"
                )
            }
            missing = [rid for rid in unique if rid not in inserted]
            if missing:
                cond, param = bulk.in_("record_id", missing)
                stored = {
                    rid
                    for (rid,) in bulk.execute(
                        f"SELECT record_id FROM records WHERE {cond}", [param]
                    )
                }
                for rid in missing:
                    if rid in stored:
                        result.duplicates += 1
                        _count(result.duplicates_by_station, unique[rid].station_id)
                    else:
                        collided.append(unique[rid])
        if invalid or collided:
            cond, param = bulk.in_(
                "record_id", sorted([*invalid, *(r.record_id for r in collided)])
            )
            seen = {
                rid
                for (rid,) in bulk.execute(
                    f"SELECT record_id FROM rejected_messages WHERE {cond}", [param]
                )
            }
            # Resends of a record already kept as rejected: acknowledged again, not kept twice.
            again = len(seen & set(invalid))
            result.duplicates += again
            rejections.extend(r for rid, r in invalid.items() if rid not in seen)
            result.invalid = len(invalid) - again
            for rec in collided:
                if rec.record_id in seen:
                    result.duplicates += 1
                    _count(result.duplicates_by_station, rec.station_id)
            fresh = [rec for rec in collided if rec.record_id not in seen]
            rejections.extend(_collisions(bulk, fresh, batch, now))
            result.collisions = len(fresh)
        result.duplicates += len(batch.records) - len(unique)
        for r in batch.records:
            if unique[r.record_id] is not r:  # the same record twice in one batch
                _count(result.duplicates_by_station, r.station_id)
        result.duplicates += sum(1 for r in batch.invalid if r.record_id is not None) - len(invalid)
        result.inserted = len(inserted)
        project(
            session,
            bulk,
            [
                Projected(unique[rid], batch.data[rid], batch.received_at[rid])
                for rid in sorted(inserted)
            ],
            now,
        )
        _update_stations(bulk, [unique[rid] for rid in inserted], now)
        heard = [*batch.heartbeats_at, *[now] * (len(batch.heartbeats) - len(batch.heartbeats_at))]
        _apply_heartbeats(bulk, batch.heartbeats, heard)
        store_samples(
            session,
            engine,
            [
                sample_row(sid, hb, at, history_step_s)
                for (sid, hb), at in zip(batch.heartbeats, heard, strict=True)
            ],
        )
        if batch.command_results:
            answers = ops_commands.apply_results(session, batch.command_results, now=now)
            for sid, res, problem in answers:
                msg = Message(topic(sid, StationTopic.COMMAND_RESULTS), encode(res), now)
                rejections.append(Rejection(msg, problem, sid))
            result.command_results = len(batch.command_results)
        record_activity(
            session,
            heard=[(sid, now) for sid, _ in batch.heartbeats]
            + [(sid, now) for sid, st in batch.statuses if st.state == "online"]
            + _minutes_heard((unique[rid].station_id, batch.received_at[rid]) for rid in inserted),
            records=[
                (unique[rid].station_id, event_time(unique[rid], batch.received_at[rid]))
                for rid in inserted
            ],
        )
        result.stale_deaths = _apply_statuses(session, batch.statuses, now)
        if rejections:
            _store_rejections(bulk, rejections)
        result.rejected = len(rejections)
        born = sorted({sid for sid, status in batch.statuses if status.state == "online"})
        if born:
            result.syncs = seq_floors(bulk, born)
    if known_stations is not None:
        known_stations.update(new_stations)
    acks: dict[str, list[str]] = defaultdict(list)
    for r in unique.values():
        acks[r.station_id].append(r.record_id)
    for rej in invalid.values():
        if rej.station_id and rej.record_id:
            acks[rej.station_id].append(rej.record_id)
    result.acks = dict(acks)
    return result


def _minutes_heard(heard: Iterable[tuple[str, datetime]]) -> list[tuple[str, datetime]]:
    """One (station, time) per station and minute: all that marking minutes heard needs."""
    firsts: dict[tuple[str, int], tuple[str, datetime]] = {}
    for sid, at in heard:
        firsts.setdefault((sid, int(at.timestamp()) // 60), (sid, at))
    return list(firsts.values())


def seq_floors(bulk: Bulk, station_ids: Sequence[str]) -> dict[str, int]:
    """The seq floor of each station: the highest seq it is known to have handed out, stored
    (``max_seq``) or not (``seq_seen``: kept as rejected, or reported as ``last_seq`` in a
    heartbeat). After a birth the station learns it, so a reinstalled station goes on above
    every seq its earlier install used (see docs/durability.md)."""
    cond, param = bulk.in_("station_id", station_ids)
    rows = bulk.execute(f"SELECT station_id, max_seq, seq_seen FROM stations WHERE {cond}", [param])
    return {str(sid): max(int(top), int(seen)) for sid, top, seen in rows}


def _collisions(
    bulk: Bulk, records: Sequence[Record], batch: Classified, now: datetime
) -> list[Rejection]:
    """Rejections for records whose (station, seq) another record holds, naming that one."""
    if not records:
        return []
    cond, params = bulk.pairs_in(
        ("station_id", "seq"), [(r.station_id, r.seq) for r in records], ("text", "int8")
    )
    holders = {
        (sid, int(seq)): rid
        for sid, seq, rid in bulk.execute(
            f"SELECT station_id, seq, record_id FROM records WHERE {cond}", params
        )
    }
    out = []
    for rec in records:
        holder = holders.get((rec.station_id, rec.seq))
        log.error(
            "seq collision on %s: seq %d of record %s is already used by record %s; kept as "
            "rejected (a reinstalled station that reused its seqs?)",
            rec.station_id,
            rec.seq,
            rec.record_id,
            holder,
        )
        payload = batch.payloads.get(rec.record_id) or encode(rec)
        received = batch.received_at.get(rec.record_id, now)
        msg = Message(topic(rec.station_id, StationTopic.RECORDS), payload, received)
        out.append(
            Rejection(
                msg,
                f"seq {rec.seq} already used by another record ({holder})",
                rec.station_id,
                rec.record_id,
                rec.seq,
                collides_with=holder,
            )
        )
    return out


def _row(bulk: Bulk, r: Record, payload: bytes | None, received_at: datetime) -> tuple[Any, ...]:
    return (
        r.record_id,
        r.station_id,
        r.seq,
        r.boot_id,
        float(r.wall_time),
        r.mono_ns,
        r.clock_synced,
        r.kind,
        r.code,
        payload if payload is not None else encode(r),
        bulk.ts(received_at),
    )


def _store_rejections(bulk: Bulk, rejections: Sequence[Rejection]) -> None:
    """Keep them, and raise each station's ``seq_seen`` to the highest seq kept: a seq that was
    acknowledged must never be handed out again after a reinstall."""
    rows = []
    seen: dict[str, int] = {}
    for r in rejections:
        log.warning(
            "rejected message on %s (station %s): %s", r.message.topic, r.station_id, r.reason
        )
        seq = r.seq if r.seq is not None and r.seq <= MAX_DB_INT else None  # 64-bit column
        rows.append(
            (
                bulk.ts(r.message.received_at),
                r.message.topic[:255],
                r.station_id,
                r.reason[:500],
                len(r.message.payload),
                r.message.payload[:KEEP_PAYLOAD_BYTES],
                r.record_id,
                seq,
                r.collides_with,
            )
        )
        if seq is not None and r.station_id and r.record_id:
            seen[r.station_id] = max(seen.get(r.station_id, 0), seq)
    bulk.insert(REJECTED, REJECTED_COLUMNS, rows)
    _raise_seq_seen(bulk, seen)


def _raise_seq_seen(bulk: Bulk, seen: dict[str, int]) -> None:
    bulk.executemany(
        "UPDATE stations SET seq_seen = ? WHERE station_id = ? AND seq_seen < ?",
        [(seq, sid, seq) for sid, seq in sorted(seen.items())],
    )


def _update_stations(bulk: Bulk, records: Sequence[Record], now: datetime) -> None:
    """Per-station sequence tracking: highest seq stored and how many records are stored."""
    max_seq: dict[str, int] = {}
    count: dict[str, int] = defaultdict(int)
    for r in records:
        max_seq[r.station_id] = max(max_seq.get(r.station_id, 0), r.seq)
        count[r.station_id] += 1
    at = bulk.ts(now)
    bulk.executemany(
        "UPDATE stations SET last_seen_at = ?, "
        "max_seq = CASE WHEN max_seq < ? THEN ? ELSE max_seq END, "
        "record_count = record_count + ? WHERE station_id = ?",
        [(at, seq, seq, count[sid], sid) for sid, seq in sorted(max_seq.items())],
    )


def _apply_heartbeats(
    bulk: Bulk, heartbeats: Sequence[tuple[str, Heartbeat]], heard: Sequence[datetime]
) -> None:
    # In arrival order: the last one of each station wins. Its arrival time (not the commit's)
    # is kept, so the server can tell how far off the station's clock is. ``last_seq`` only
    # ever raises ``seq_seen`` (a reinstalled station reports a low one until it is told).
    latest = {sid: (hb, at) for (sid, hb), at in zip(heartbeats, heard, strict=True)}
    bulk.executemany(
        "UPDATE stations SET last_seen_at = ?, last_heartbeat_at = ?, outbox_depth = ?, "
        f"heartbeat = {bulk.json_param()}, "
        "seq_seen = CASE WHEN seq_seen < ? THEN ? ELSE seq_seen END WHERE station_id = ?",
        [
            (
                bulk.ts(at),
                bulk.ts(at),
                hb.outbox_depth,
                json.dumps(hb.model_dump(mode="json")),
                min(hb.last_seq or 0, MAX_DB_INT),
                min(hb.last_seq or 0, MAX_DB_INT),
                sid,
            )
            for sid, (hb, at) in sorted(latest.items())
        ],
    )


def _apply_statuses(session: Session, statuses: Sequence[tuple[str, Status]], now: datetime) -> int:
    """Births and deaths, in arrival order; returns how many deaths were stale.

    Each is one conditional UPDATE, so concurrent workers (each subscribed to every status)
    cannot interleave a read and a write: a death applies only while the stored ``bd_seq`` is
    the death's own, so a late will from an older connection never overwrites a newer birth.
    Births always apply (a reinstalled station restarts its counter).
    """
    stale = 0
    for sid, status in statuses:
        if status.state == "online":
            values: dict[str, Any] = {"state": "online", "bd_seq": status.bd_seq}
            values["last_seen_at"] = now
            if status.agent_version:
                values["agent_version"] = status.agent_version[:32]
            session.execute(update(StationRow).where(StationRow.station_id == sid).values(values))
        else:
            done = session.execute(
                update(StationRow)
                .where(StationRow.station_id == sid, StationRow.bd_seq == status.bd_seq)
                .values(state="offline")
            )
            if done.rowcount == 0:  # type: ignore[attr-defined]
                stale += 1
                log.info("ignoring stale death of %s (bd_seq %d)", sid, status.bd_seq)
    return stale


def _transient(exc: SQLAlchemyError) -> bool:
    """Worth retrying the same batch: lost connection, lock timeout, deadlock, serialization."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or ""
        return code in {"40001", "40P01"} or code.startswith("08")
    return False


def _refused_data(exc: Exception) -> bool:
    """Whether a value made the database or its driver refuse the statement (an int beyond 64
    bits, a NUL in PostgreSQL text, a string longer than its column), as opposed to a transient
    failure or a programming error."""
    if isinstance(exc, DBAPIError):
        return not _transient(exc)
    if isinstance(exc, StatementError):
        return isinstance(exc.orig, ValueError | OverflowError)
    return isinstance(exc, OverflowError)


def _split(batch: Classified) -> list[tuple[Classified, Message | None, Record | None]]:
    """The batch as parts of one item each (rejections together), with the item's message."""
    parts: list[tuple[Classified, Message | None, Record | None]] = [
        (Classified(rejections=batch.rejections, invalid=batch.invalid), None, None)
    ]
    for sid, status in batch.statuses:
        msg = Message(topic(sid, StationTopic.STATUS), encode(status), datetime.now(UTC))
        parts.append((Classified(statuses=[(sid, status)]), msg, None))
    heard = [*batch.heartbeats_at, *[datetime.now(UTC)] * len(batch.heartbeats)]
    for (sid, hb), at in zip(batch.heartbeats, heard, strict=False):
        msg = Message(topic(sid, StationTopic.HEARTBEAT), encode(hb), at)
        parts.append((Classified(heartbeats=[(sid, hb)], heartbeats_at=[at]), msg, None))
    for sid, res in batch.command_results:
        msg = Message(topic(sid, StationTopic.COMMAND_RESULTS), encode(res), datetime.now(UTC))
        parts.append((Classified(command_results=[(sid, res)]), msg, None))
    for r in batch.records:
        rid = r.record_id
        payload = batch.payloads.get(rid) or encode(r)
        part = Classified(
            records=[r],
            data={rid: batch.data[rid]},
            received_at={rid: batch.received_at[rid]},
            payloads={rid: payload},
        )
        msg = Message(topic(r.station_id, StationTopic.RECORDS), payload, batch.received_at[rid])
        parts.append((part, msg, r))
    return parts


def _with_retries(
    store: Callable[[], Stored],
    counters: IngestCounters,
    retries: int,
    sleep: Callable[[float], None],
) -> Stored:
    delay = 0.05
    for attempt in range(retries + 1):
        try:
            return store()
        except SQLAlchemyError as exc:
            if not _transient(exc) or attempt == retries:
                raise
            counters.add("db_retries")
            log.warning("transient database error (%s); retry %d", exc.__class__.__name__, attempt)
            sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def store_resilient(
    engine: Engine,
    batch: Classified,
    *,
    known_stations: set[str] | None = None,
    counters: IngestCounters | None = None,
    retries: int = 8,
    sleep: Callable[[float], None] = time.sleep,
    history_step_s: int = 60,
) -> Stored:
    """``store_batch`` that survives what it can.

    Transient database errors (connection lost, deadlock, lock timeout) retry the batch with
    backoff, then propagate (the worker exits and is restarted; nothing was acknowledged, so
    stations resend). Any other failure means some item is poison: a value the contract allows
    but a column does not (the database refuses it), or data that trips a Python exception in
    the projection (a bug; retried once, as it may have been a passing state). The batch is
    then stored item by item, and an item that fails on its own is kept as rejected with the
    reason (a record is then also acknowledged, as resending cannot help: it is kept, and can
    be replayed from ``rejected_messages`` once fixed). The worker goes on.
    """
    counters = counters or IngestCounters()

    def attempt(part: Classified) -> Stored:
        return _with_retries(
            lambda: store_batch(
                engine, part, known_stations=known_stations, history_step_s=history_step_s
            ),
            counters,
            retries,
            sleep,
        )

    try:
        return attempt(batch)
    except Exception as exc:
        if not _poison(exc):
            raise
        log.warning("batch failed (%s: %s); storing item by item", exc.__class__.__name__, exc)
    total = Stored()
    for part, message, record in _split(batch):
        try:
            try:
                total.merge(attempt(part))
                continue
            except Exception as exc:
                if isinstance(exc, SQLAlchemyError | OverflowError) or not _poison(exc):
                    raise
                where = message.topic if message else "rejected messages"
                log.exception("ingest failed on a message on %s; retrying it once", where)
                total.merge(attempt(part))
        except Exception as exc:
            if not _poison(exc) or message is None:
                raise
            if isinstance(exc, SQLAlchemyError | OverflowError):
                orig = getattr(exc, "orig", None) or exc
                reason = f"database refused it: {orig.__class__.__name__}: {orig}"
            else:
                reason = f"ingest failed on it: {exc.__class__.__name__}: {exc}"
            sid = parse_station_topic(message.topic).station_id
            log.error("poison message on %s: %s", message.topic, reason)
            rejection = Rejection(
                message,
                reason[:500],
                sid,
                record.record_id if record else None,
                record.seq if record else None,
            )
            poison = (
                Classified(invalid=[rejection]) if record else Classified(rejections=[rejection])
            )
            stored = attempt(poison)
            stored.poison = 1
            counters.add("poison_records")
            total.merge(stored)
    return total


def _poison(exc: Exception) -> bool:
    """Whether a failure to store is the data's fault (store the rest, keep it as rejected)
    rather than the database's (retry, or give up and let the stations resend)."""
    if isinstance(exc, SQLAlchemyError | OverflowError):
        return _refused_data(exc)
    return True


def collect_batch(
    source: queue.SimpleQueue[Message],
    *,
    max_rows: int,
    max_s: float,
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
    wait_s: float = 0.2,
) -> list[Message]:
    """The next batch: waits up to ``wait_s`` for a first message, then takes what is waiting.

    The batch closes at ``max_rows`` messages, once ``max_s`` have passed since its first
    message, or as soon as no message is waiting: a record is never held back waiting for
    others (latency), while under load messages pile up during each commit, so batches grow
    by themselves (throughput). ``[]`` when nothing came or ``stop`` is set.
    """
    try:
        first = source.get(timeout=wait_s)
    except queue.Empty:
        return []
    batch = [first]
    deadline = clock() + max_s
    while len(batch) < max_rows and not stop.is_set() and clock() < deadline:
        try:
            batch.append(source.get_nowait())
        except queue.Empty:
            break
    return batch


class MqttIngest:
    """Subscribes to every station's records, heartbeats and command results (MQTT 5 shared
    subscriptions) and status.

    Wiring: connects with a clean session as ``username`` to ``host:port``; several workers may
    run side by side in the same ``shared_group``, each with its own ``client_id``. Messages
    queue in memory until committed: if the worker dies, stations resend whatever was not
    acknowledged.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        host: str,
        port: int,
        username: str,
        password: str | None,
        client_id: str,
        shared_group: str = "swabline-ingest",
        batch_max_rows: int = 500,
        batch_max_ms: int = 50,
        counters: IngestCounters | None = None,
        on_stored: Callable[[Stored], None] | None = None,
        history_step_s: int = 60,
        db_retries: int = 8,
    ) -> None:
        self._engine = engine
        self._db_retries = db_retries
        self._history_step_s = history_step_s
        self._host, self._port = host, port
        self._group = shared_group
        self._max_rows, self._max_s = batch_max_rows, batch_max_ms / 1000
        self._on_stored = on_stored
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._known_stations: set[str] = set()
        self.connected = threading.Event()
        self.counters = counters or IngestCounters()
        # Backpressure: messages are acknowledged to the broker (PUBACK, paho's manual acks)
        # only after their batch is committed, so the broker never has more than its in-flight
        # window (max_inflight_messages in broker/mosquitto.conf) out to a worker; the rest waits
        # in the broker. Without it a reconnect storm lands in the server's memory at network
        # speed (measured: BENCHMARKS.md, the storm section).
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self._connection = 0
        client.username_pw_set(username, password)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self.totals = Stored()

    @property
    def queued(self) -> int:
        """Messages received from the broker and not yet taken into a batch."""
        return self._queue.qsize()

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set. Database errors that outlast the retries propagate."""
        self._client.connect_async(self._host, self._port, keepalive=30, clean_start=True)
        self._client.loop_start()
        try:
            while not stop.is_set():
                batch = self._collect(stop)
                if batch:
                    self._process(batch)
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def _collect(self, stop: threading.Event) -> list[Message]:
        return collect_batch(self._queue, max_rows=self._max_rows, max_s=self._max_s, stop=stop)

    def _process(self, batch: list[Message]) -> None:
        c = self.counters
        c.add("messages", len(batch))
        c.set("queue_depth", self._queue.qsize())
        started = time.perf_counter()
        stored = store_resilient(
            self._engine,
            classify(batch),
            known_stations=self._known_stations,
            counters=c,
            history_step_s=self._history_step_s,
            retries=self._db_retries,
        )
        elapsed = time.perf_counter() - started
        c.add("batch_seconds", elapsed)
        c.add("batches")
        log.debug("stored a batch of %d messages in %.1f ms", len(batch), elapsed * 1000)
        for station_id, ids in stored.acks.items():
            for i in range(0, len(ids), MAX_ACK_IDS):
                ack = Ack(record_ids=ids[i : i + MAX_ACK_IDS], server_time=time.time())
                self._client.publish(topic(station_id, StationTopic.ACKS), encode(ack), qos=1)
                c.add("acks_published")
        c.add("records_inserted", stored.inserted)
        c.add("records_duplicate", stored.duplicates)
        c.add("records_invalid", stored.invalid)
        c.add("rejected", stored.rejected)
        c.add("stale_deaths", stored.stale_deaths)
        c.add("statuses", sum(1 for m in batch if m.topic.endswith("/status")))
        self.totals.merge(
            Stored(
                inserted=stored.inserted,
                duplicates=stored.duplicates,
                invalid=stored.invalid,
                rejected=stored.rejected,
                stale_deaths=stored.stale_deaths,
                poison=stored.poison,
                duplicates_by_station=stored.duplicates_by_station,
            )
        )
        for station_id, max_seq in stored.syncs.items():
            sync = Sync(max_seq=max_seq)
            self._client.publish(topic(station_id, StationTopic.SYNC), encode(sync), qos=1)
        for sid, n in stored.duplicates_by_station.items():
            log.info("%d duplicate record(s) from %s: already stored, acknowledged again", n, sid)
        for m in batch:  # committed: the broker may forget them and send more
            if m.mid and m.connection == self._connection:
                self._client.ack(m.mid, 1)
        if self._on_stored is not None:
            self._on_stored(stored)

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            log.error("broker refused the ingest connection: %s", rc)
            return
        self._connection += 1  # acks for messages of an older connection are not sent
        client.subscribe(
            [
                (subscription(StationTopic.RECORDS, shared_group=self._group), 1),
                (subscription(StationTopic.HEARTBEAT, shared_group=self._group), 0),
                (subscription(StationTopic.COMMAND_RESULTS, shared_group=self._group), 1),
                # Not shared: retained births and deaths are not delivered to shared subscribers.
                (subscription(StationTopic.STATUS), 1),
            ]
        )

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        if any(rc.is_failure for rc in codes):
            log.error("broker refused the ingest subscriptions: %s", codes)
            return
        self.connected.set()  # only now are messages routed to this worker
        log.info("ingest connected to %s:%d", self._host, self._port)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        self.connected.clear()
        log.warning("ingest disconnected: %s", rc)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        mid = msg.mid if msg.qos > 0 else 0
        self._queue.put(
            Message(msg.topic, bytes(msg.payload), datetime.now(UTC), mid, self._connection)
        )


def client_id(index: int) -> str:
    """A client id unique per host, process and worker slot."""
    return f"swabline-ingest-{socket.gethostname()[:20]}-{os.getpid()}-{index}"


def run_worker(
    config_json: str,
    index: int,
    shared: Any,
    stop: Any,
    log_level: str,
    password: str | None,
) -> None:
    """Body of one ingest worker process (``multiprocessing`` spawn target).

    Ctrl-C goes to the whole process group: the worker ignores SIGINT and stops when the parent
    sets ``stop`` (or on SIGTERM).
    """
    from server import memory
    from server.config import ServerConfig
    from server.db import make_engine
    from server.metrics import FIELDS

    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s %(name)s[ingest-{index}]: %(message)s",
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    local_stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: local_stop.set())
    config = ServerConfig.model_validate_json(config_json)
    engine = make_engine(config.database.url)
    counters = IngestCounters(shared, index * len(FIELDS)) if shared is not None else None
    ingest = MqttIngest(
        engine=engine,
        host=config.mqtt.host,
        port=config.mqtt.port,
        username=config.mqtt.username,
        password=password,
        client_id=client_id(index),
        shared_group=config.ingest.shared_group,
        batch_max_rows=config.ingest.batch_max_rows,
        batch_max_ms=config.ingest.batch_max_ms,
        counters=counters,
        history_step_s=config.ops.history_step_s,
    )

    def watch() -> None:
        while not local_stop.is_set():
            if stop.wait(0.5):
                local_stop.set()

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()
    for thread in memory.threads(config.memory.trim_s, local_stop, f"ingest-{index}"):
        thread.start()
    # Each batch makes and drops thousands of short-lived objects: with the default threshold
    # the cyclic collector ran every few records and walked everything the process had loaded
    # (about a tenth of a worker's CPU). What exists now is kept out of its way for good.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 10)
    try:
        ingest.run(local_stop)
    finally:
        engine.dispose()
