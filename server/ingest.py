"""Ingest: MQTT messages from stations -> validated rows -> one commit per batch -> acks.

``classify`` is pure (bytes in, decisions out); ``store_batch`` does the database work in one
transaction; ``MqttIngest`` is the thin adapter that feeds them from the broker and publishes the
acknowledgements after the commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from protocol import Ack, Heartbeat, PayloadError, Record, Status, Sync, decode, encode
from protocol.messages import MAX_ACK_IDS
from protocol.topics import StationTopic, TopicError, parse_station_topic, subscription, topic
from server.models import RecordRow, RejectedMessage, StationRow

log = logging.getLogger(__name__)

KEEP_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Rejection:
    message: Message
    reason: str
    station_id: str | None = None


@dataclass
class Classified:
    records: list[Record] = field(default_factory=list)
    statuses: list[tuple[str, Status]] = field(default_factory=list)
    heartbeats: list[tuple[str, Heartbeat]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    received_at: dict[str, datetime] = field(default_factory=dict)


def classify(messages: Iterable[Message]) -> Classified:
    """Validate each message against the contract; never raises for bad input."""
    out = Classified()
    for m in messages:
        try:
            where = parse_station_topic(m.topic)
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
                    out.records.append(record)
                    out.received_at[record.record_id] = m.received_at
                case StationTopic.STATUS:
                    if m.payload:  # an empty retained message clears the topic
                        out.statuses.append((where.station_id, decode(Status, m.payload)))
                case StationTopic.HEARTBEAT:
                    out.heartbeats.append((where.station_id, decode(Heartbeat, m.payload)))
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
    """Station -> highest seq stored, for each station whose birth was in the batch."""
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    duplicates_by_station: dict[str, int] = field(default_factory=dict)


def _insert(engine: Engine, table: Any) -> postgresql.Insert | sqlite.Insert:
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"database {dialect!r} is not supported")


def store_batch(engine: Engine, batch: Classified) -> Stored:
    """Store a classified batch in one transaction; returns what to acknowledge per station.

    Idempotent by ``record_id``: a resent record is acknowledged again, never stored twice. A
    record whose (station, seq) is taken by a different record is kept as a rejected message,
    so it is never lost, and acknowledged so the station does not resend it forever.
    """
    result = Stored()
    now = datetime.now(UTC)
    unique = {r.record_id: r for r in batch.records}  # a resend inside the same batch
    rejections = list(batch.rejections)
    with Session(engine) as session, session.begin():
        station_ids = {r.station_id for r in unique.values()}
        station_ids |= {s for s, _ in batch.statuses} | {s for s, _ in batch.heartbeats}
        if station_ids:
            session.execute(
                _insert(engine, StationRow)
                .values([_new_station(s) for s in sorted(station_ids)])
                .on_conflict_do_nothing(index_elements=["station_id"])
            )
        inserted: set[str] = set()
        if unique:
            rows = [_row(r, batch.received_at[r.record_id]) for r in unique.values()]
            ins = _insert(engine, RecordRow).on_conflict_do_nothing().returning(RecordRow.record_id)
            inserted = set(session.scalars(ins, rows).all())
            missing = [rid for rid in unique if rid not in inserted]
            if missing:
                known = set(
                    session.scalars(
                        select(RecordRow.record_id).where(RecordRow.record_id.in_(missing))
                    )
                )
                for rid in missing:
                    if rid in known:
                        result.duplicates += 1
                        sid = unique[rid].station_id
                        dups = result.duplicates_by_station
                        dups[sid] = dups.get(sid, 0) + 1
                    else:
                        rec = unique[rid]
                        msg = Message(topic(rec.station_id, StationTopic.RECORDS), encode(rec), now)
                        rejections.append(
                            Rejection(
                                msg, f"seq {rec.seq} already used by another record", rec.station_id
                            )
                        )
        result.duplicates += len(batch.records) - len(unique)
        for r in batch.records:
            if unique[r.record_id] is not r:  # the same record twice in one batch
                dups = result.duplicates_by_station
                dups[r.station_id] = dups.get(r.station_id, 0) + 1
        result.inserted = len(inserted)
        _update_stations(session, unique.values(), batch, now)
        born = {sid for sid, status in batch.statuses if status.state == "online"}
        if born:
            floors = session.execute(
                select(StationRow.station_id, StationRow.max_seq).where(
                    StationRow.station_id.in_(born)
                )
            )
            result.syncs = {sid: int(max_seq) for sid, max_seq in floors}
        if rejections:
            session.add_all(_rejected_row(r) for r in rejections)
        result.rejected = len(batch.rejections)
    acks: dict[str, list[str]] = defaultdict(list)
    for r in unique.values():
        acks[r.station_id].append(r.record_id)
    result.acks = dict(acks)
    return result


def _new_station(station_id: str) -> dict[str, Any]:
    return {"station_id": station_id, "state": "unknown", "bd_seq": -1, "max_seq": 0}


def _row(r: Record, received_at: datetime) -> dict[str, Any]:
    return {
        "record_id": r.record_id,
        "station_id": r.station_id,
        "seq": r.seq,
        "boot_id": r.boot_id,
        "wall_time": r.wall_time,
        "mono_ns": r.mono_ns,
        "clock_synced": r.clock_synced,
        "kind": r.kind,
        "code": r.code,
        "data": r.data,
        "received_at": received_at,
    }


def _rejected_row(r: Rejection) -> RejectedMessage:
    log.warning("rejected message on %s (station %s): %s", r.message.topic, r.station_id, r.reason)
    return RejectedMessage(
        received_at=r.message.received_at,
        topic=r.message.topic[:255],
        station_id=r.station_id,
        reason=r.reason[:500],
        size=len(r.message.payload),
        payload=r.message.payload[:KEEP_PAYLOAD_BYTES],
    )


def _update_stations(
    session: Session, records: Iterable[Record], batch: Classified, now: datetime
) -> None:
    max_seq: dict[str, int] = {}
    for r in records:
        max_seq[r.station_id] = max(max_seq.get(r.station_id, 0), r.seq)
    for sid, hb in batch.heartbeats:  # in arrival order: the last one wins
        session.execute(
            update(StationRow)
            .where(StationRow.station_id == sid)
            .values(
                last_seen_at=now,
                last_heartbeat_at=now,
                outbox_depth=hb.outbox_depth,
                heartbeat=hb.model_dump(mode="json"),
            )
        )
    for sid, seq in max_seq.items():
        session.execute(
            update(StationRow)
            .where(StationRow.station_id == sid)
            .values(last_seen_at=now, max_seq=_greatest(StationRow.max_seq, seq))
        )
    for sid, status in batch.statuses:
        row = session.get(StationRow, sid)
        if row is None:
            continue
        if status.state == "online":
            # Births always win (a reinstalled station restarts its counter).
            row.state, row.bd_seq, row.last_seen_at = "online", status.bd_seq, now
            row.agent_version = status.agent_version or row.agent_version
        elif status.bd_seq == row.bd_seq:
            row.state = "offline"
        else:
            log.info(
                "ignoring stale death of %s (bd_seq %d, current %d)", sid, status.bd_seq, row.bd_seq
            )


def _greatest(column: Any, value: int) -> Any:
    return case((column < value, value), else_=column)


class MqttIngest:
    """Subscribes to every station's records (MQTT 5 shared subscription), status and heartbeat.

    Wiring: connects with a clean session as ``username`` to ``host:port``; several workers may
    run side by side in the same ``shared_group``. Messages queue in memory until committed: if
    the worker dies, stations resend whatever was not acknowledged.
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
        on_stored: Callable[[Stored], None] | None = None,
    ) -> None:
        self._engine = engine
        self._host, self._port = host, port
        self._group = shared_group
        self._max_rows, self._max_s = batch_max_rows, batch_max_ms / 1000
        self._on_stored = on_stored
        self._queue: queue.Queue[Message] = queue.Queue()
        self.connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self.totals = Stored()

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set. Database errors propagate (the process restarts)."""
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
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._max_s
        while len(batch) < self._max_rows and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _process(self, batch: list[Message]) -> None:
        stored = store_batch(self._engine, classify(batch))
        for station_id, ids in stored.acks.items():
            for i in range(0, len(ids), MAX_ACK_IDS):
                ack = Ack(record_ids=ids[i : i + MAX_ACK_IDS])
                self._client.publish(topic(station_id, StationTopic.ACKS), encode(ack), qos=1)
        for station_id, max_seq in stored.syncs.items():
            sync = Sync(max_seq=max_seq)
            self._client.publish(topic(station_id, StationTopic.SYNC), encode(sync), qos=1)
        self.totals.inserted += stored.inserted
        self.totals.duplicates += stored.duplicates
        self.totals.rejected += stored.rejected
        for sid, n in stored.duplicates_by_station.items():
            by = self.totals.duplicates_by_station
            by[sid] = by.get(sid, 0) + n
            log.info("%d duplicate record(s) from %s: already stored, acknowledged again", n, sid)
        if self._on_stored is not None:
            self._on_stored(stored)

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            log.error("broker refused the ingest connection: %s", rc)
            return
        client.subscribe(
            [
                (subscription(StationTopic.RECORDS, shared_group=self._group), 1),
                (subscription(StationTopic.HEARTBEAT, shared_group=self._group), 0),
                # Not shared: retained births and deaths are not delivered to shared subscribers.
                (subscription(StationTopic.STATUS), 1),
            ]
        )
        self.connected.set()
        log.info("ingest connected to %s:%d", self._host, self._port)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        self.connected.clear()
        log.warning("ingest disconnected: %s", rc)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(Message(msg.topic, bytes(msg.payload), datetime.now(UTC)))
