"""The station loop: scan -> workflow decision -> store -> feedback -> publish -> ack.

Everything that happens to a station (a scan, a scanner unplugged, the broker connecting, an
acknowledgement) arrives as an event on one queue and is handled on one thread, so the workflow
and the outbox never see concurrent calls.

Delivery (see ``docs/durability.md``): a scan is signalled ``SAVED`` only once its records are
synced to disk by the outbox. While connected, records are published with QoS 1 in sequence
order, pipelined, at most ``drain_per_s`` per second and at most ``max_unacked`` waiting for the
server's acknowledgement; a record leaves the outbox only on that acknowledgement. After a
reconnect everything unacknowledged is sent again from the start, at once.

On the same connection a record is sent again only when the server seems to have lost it: it
waited its resend interval, and either no acknowledgement at all arrived for
``resend_after_s`` (the server is gone or stuck), or the server acknowledged a record sent
after it (it has moved past it: the broker dropped it). Acknowledgements still flowing in order
mean the server is alive and draining a backlog, and nothing is offered to it twice. A record's
resend interval starts at ``resend_after_s`` and grows with each resend (exponential, jittered,
capped at ``resend_max_s``; ``agent.backoff.jittered_delay``).
"""

from __future__ import annotations

import heapq
import logging
import queue
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.backoff import TokenBucket, jittered_delay
from agent.errors import OutboxError, OutboxFullError, OutboxNotReadyError
from agent.identity import uuid7
from agent.ports import (
    Acked,
    Clock,
    CommandReceived,
    Condition,
    Connected,
    Decision,
    Disconnected,
    Entry,
    Feedback,
    Outbox,
    Scan,
    ScannerState,
    ScanSource,
    SessionHistory,
    Signal,
    SourceEvent,
    Synced,
    Uplink,
    UplinkEvent,
    Workflow,
)
from protocol import Heartbeat, Record

if TYPE_CHECKING:
    from agent.ops import StationOps

log = logging.getLogger(__name__)

StationEvent = SourceEvent | UplinkEvent

_PRUNE_HISTORY_EVERY = 500
"""Records remembered between two prunings of the session history."""
_RESEND_CHECK_NS = 1_000_000_000
_MAX_PUBLISH_BATCH = 500


@dataclass(slots=True)
class _Sent:
    """A record published on this connection and not acknowledged yet."""

    seq: int
    order: int
    """Counts publishes on this connection: which of two records went out first."""
    sends: int
    """How many times it was published on this connection (its resend backoff)."""
    due_ns: int
    """When it may be sent again if the server seems to have lost it."""


class RecordEveryScan:
    """The simplest workflow: every accepted scan is stored as a ``scan`` record."""

    def decide(self, scan: Scan) -> Decision:
        if scan.rejected:
            return Decision(entries=(), signal=Signal.REJECTED)
        return Decision(entries=(Entry(kind="scan", code=scan.text),), signal=Signal.SAVED)

    def restore(self, records: Iterable[Record]) -> None:
        pass  # keeps no state

    def stored(self, records: Sequence[Record]) -> None:
        pass

    def retain(self, records: Iterable[Record]) -> list[Record]:
        return []


class Station:
    """One scanner station.

    Args:
        station_id: this station's id (also its MQTT username).
        boot_id: the kernel's boot id, stored with every record.
        sources: where scans come from; each runs on its own thread.
        workflow: decides what each scan means.
        outbox: durable store of unacknowledged records.
        uplink: connection to the server.
        feedback: LEDs and buzzer.
        clock: time.
        on_tick: called about every ``tick_s`` on the station thread (e.g. the watchdog).
        heartbeat_s: how often a heartbeat is sent while connected.
        resend_after_s: a record published but not acknowledged after this long may be sent
            again (the broker drops messages nobody was subscribed to; the server may have died
            before committing): when no acknowledgement at all arrived for this long, or when
            a record sent after it was acknowledged. Never while acknowledgements flow in order.
        resend_max_s: the cap of a record's resend interval, which doubles (jittered) with each
            resend; never below ``resend_after_s``.
        history: where copies of the records the workflow needs after a restart are kept
            (``Workflow.retain``), since acknowledged records leave the outbox. Without it the
            workflow is restored from unacknowledged records only.
        drain_per_s: most records published per second (a backlog drains at this pace, so
            that a fleet coming back online at once does not flatten the server).
        max_unacked: most records published and not yet acknowledged; sending pauses beyond.
        acked_retention_s: acknowledged records are purged from the outbox after this long.
        purge_every_s: how often the purge runs.
        ops: heartbeat telemetry and remote commands (``agent.ops``); optional.
        rng: randomness of the resend jitter (tests pass their own).
    """

    def __init__(
        self,
        *,
        station_id: str,
        boot_id: str,
        sources: Sequence[ScanSource],
        workflow: Workflow,
        outbox: Outbox,
        uplink: Uplink,
        feedback: Feedback,
        clock: Clock,
        on_tick: Callable[[], None] | None = None,
        tick_s: float = 1.0,
        heartbeat_s: float = 10.0,
        resend_after_s: float = 30.0,
        resend_max_s: float = 300.0,
        history: SessionHistory | None = None,
        drain_per_s: float = 200.0,
        max_unacked: int = 1000,
        acked_retention_s: float = 24 * 3600.0,
        purge_every_s: float = 60.0,
        ops: StationOps | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.station_id = station_id
        self.boot_id = boot_id
        self._sources = list(sources)
        self._workflow = workflow
        self._outbox = outbox
        self._uplink = uplink
        self._feedback = feedback
        self._clock = clock
        self._on_tick = on_tick
        self._tick_s = tick_s
        self._heartbeat_ns = int(heartbeat_s * 1e9)
        self._resend_s = resend_after_s
        self._resend_max_s = max(resend_max_s, resend_after_s)
        self._resend_ns = int(resend_after_s * 1e9)
        self._rng = rng or random.Random()
        self._max_unacked = max_unacked
        self._retention_s = acked_retention_s
        self._purge_ns = int(purge_every_s * 1e9)
        self._events: queue.Queue[StationEvent] = queue.Queue()
        now = clock.monotonic_ns()
        self._started_ns = now
        self._bucket = TokenBucket(drain_per_s, max(1.0, drain_per_s / 10), now)
        self._last_heartbeat_ns: int | None = None
        self._history = history
        self._remembered = 0  # records remembered since the history was last pruned
        self._last_resend_check_ns = now
        self._last_purge_ns: int | None = None
        # Records published on this connection and not acknowledged.
        self._unacked: dict[str, _Sent] = {}
        self._resending: dict[str, int] = {}  # record id -> sends so far, while it waits again
        self._order = 0  # publishes on this connection
        self._acked_order = 0  # the latest-sent record acknowledged on this connection
        self._last_ack_ns = now  # an acknowledgement, or the start of the connection
        self._cursor = 0  # highest seq handed to the uplink on this connection, in order
        self._more = True  # records above the cursor may be waiting
        self._last_saved: str | None = None
        self._nearly_full = False
        self.saved = 0
        self.confirmed = 0
        self._ops = ops
        self._stop: threading.Event | None = None
        self.exit_code = 0

    def submit(self, event: StationEvent) -> None:
        """Hand an event to the station thread (thread-safe)."""
        self._events.put(event)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set."""
        self._stop = stop
        self.restore()
        self._feedback.set_condition(Condition.OFFLINE, True)
        if not self._outbox.ready:
            log.warning("new outbox: scans are refused until the server has been reached once")
            self._feedback.set_condition(Condition.AWAITING_SERVER, True)
        self._check_nearly_full()
        for source in self._sources:
            threading.Thread(
                target=source.run,
                args=(self.submit, stop),
                name=f"source-{source.name}",
                daemon=True,
            ).start()
        self._uplink.start(self.submit)
        while not stop.is_set():
            try:
                event = self._events.get(timeout=self._wait_s())
            except queue.Empty:
                event = None
            if event is not None:
                self.handle(event)
            self.tick()

    def restore(self) -> None:
        """Rebuild the workflow's session from the history and the outbox, then prune the
        history to what the workflow still needs (called by ``run``; public for tests)."""
        kept = self._history.remembered() if self._history is not None else []
        self._workflow.restore(_merged(kept, self._stored_records()))
        log.info("session restored (%d records kept in history)", len(kept))
        if self._history is not None:
            self._prune_history(kept)

    def _prune_history(self, kept: Sequence[Record]) -> None:
        assert self._history is not None
        needed = {r.seq for r in self._workflow.retain(kept)}
        stale = [r.seq for r in kept if r.seq not in needed]
        self._remembered = 0
        if stale:
            try:
                self._history.forget(stale)
            except OutboxError:  # only space is lost; the next pruning tries again
                log.exception("cannot prune the session history")

    def _stored_records(self) -> Iterator[Record]:
        """Unacknowledged records, oldest first, read a page at a time (the backlog may be
        large: it is never all in memory at once)."""
        after = 0
        while page := self._outbox.pending(500, after_seq=after):
            yield from page
            after = page[-1].seq

    def tick(self) -> None:
        """Periodic work: heartbeat, resends, sending the backlog, purge, the caller's hook."""
        now = self._clock.monotonic_ns()
        if self._uplink.connected:
            last = self._last_heartbeat_ns
            if last is None or now - last >= self._heartbeat_ns:
                self._last_heartbeat_ns = now
                self._uplink.publish_heartbeat(self.heartbeat())
            if now - self._last_resend_check_ns >= _RESEND_CHECK_NS:
                self._last_resend_check_ns = now
                self._resend_overdue(now)
            self._pump(now)
        if self._last_purge_ns is None or now - self._last_purge_ns >= self._purge_ns:
            self._last_purge_ns = now
            self._purge()
        if self._on_tick is not None:
            self._on_tick()
        if self._ops is not None:
            self._ops.tick()

    def heartbeat(self) -> Heartbeat:
        now = self._clock.wall()
        oldest = self._outbox.oldest_pending_time()
        heartbeat = Heartbeat(
            time=now,
            uptime_s=(self._clock.monotonic_ns() - self._started_ns) / 1e9,
            outbox_depth=len(self._outbox),
            oldest_pending_age_s=None if oldest is None else max(0.0, now - oldest),
            outbox_capacity=self._outbox.capacity,
            outbox_nearly_full=self._outbox.nearly_full,
            last_seq=self._outbox.last_seq(),
        )
        if self._ops is not None:
            # The ops readings win: e.g. their backlog age follows the monotonic clock.
            fields = {**heartbeat.model_dump(exclude_none=True), **self._ops.heartbeat_fields()}
            heartbeat = Heartbeat.model_validate(fields)
        return heartbeat

    def handle(self, event: StationEvent) -> None:
        """Handle one event (public so tests can drive a station without threads)."""
        if self._ops is not None:
            self._ops.observe(event)
        match event:
            case Scan():
                self._on_scan(event)
            case ScannerState(present=present):
                self._feedback.set_condition(Condition.SCANNER_MISSING, not present)
            case Connected():
                self._feedback.set_condition(Condition.OFFLINE, False)
                self._restart_sending()
                self._last_heartbeat_ns = None
            case Disconnected():
                self._feedback.set_condition(Condition.OFFLINE, True)
                self._restart_sending()
            case Acked(record_ids=ids):
                self._on_acked(ids)
            case Synced(max_seq=max_seq):
                self._on_synced(max_seq)
            case CommandReceived():
                if self._ops is not None:
                    self._ops.on_command(event.command, self)
                else:
                    log.info("command %s ignored: no ops hooks", event.command.name)

    # -- scans ----------------------------------------------------------------------------

    def _on_scan(self, scan: Scan) -> None:
        decision = self._workflow.decide(scan)
        try:
            records = self._store(decision.entries)
        except OutboxNotReadyError:
            log.warning("scan refused: the outbox waits for the server to give the seq floor")
            self._feedback.signal(Signal.REJECTED)
            return
        except OutboxFullError as exc:
            log.error("scan refused, nothing stored: %s", exc)
            self._feedback.signal(Signal.STORAGE_FULL)
            self._check_nearly_full()
            return
        except OutboxError:
            log.exception("scan refused, nothing stored")
            self._feedback.signal(Signal.STORAGE_FULL)
            return
        # The outbox stores a decision's records all together or not at all (above).
        self._workflow.stored(records)
        for record in records:
            # The promise made to the person in the queue, in a form tests can check.
            log.info("saved record %s seq %d", record.record_id, record.seq)
        self._feedback.signal(decision.signal)
        if not records:
            return
        self._last_saved = records[-1].record_id
        self._check_nearly_full()
        if self._uplink.connected and self._outbox.ready:
            now = self._clock.monotonic_ns()
            for record in records:
                self._send(record, now)
            self._bucket.take(len(records), now)
        else:
            self._more = True
        # The signal promises the outbox, not the history: keep the history after it, so
        # staff never wait for it. It only has to be written before an acknowledgement can
        # take these records out of the outbox, which happens on this thread, later.
        if self._history is not None:
            try:
                self._remember(records)
            except OutboxError:
                log.exception("cannot keep the session history")
                self._feedback.signal(Signal.STORAGE_FULL)

    def _remember(self, records: Sequence[Record]) -> None:
        assert self._history is not None
        keep = self._workflow.retain(records)
        if keep:
            self._history.remember(keep)
            self._remembered += len(keep)
        if self._remembered >= _PRUNE_HISTORY_EVERY:
            self._prune_history(self._history.remembered())

    def _store(self, entries: Sequence[Entry]) -> list[Record]:
        if not entries:
            return []
        if not self._outbox.ready:
            raise OutboxNotReadyError("seq floor unknown")
        base = self._outbox.last_seq()
        records = [
            Record(
                record_id=uuid7(),
                station_id=self.station_id,
                seq=base + i,
                boot_id=self.boot_id,
                wall_time=self._clock.wall(),
                mono_ns=self._clock.monotonic_ns(),
                clock_synced=self._clock.synchronized(),
                kind=entry.kind,
                code=entry.code,
                data=dict(entry.data),
            )
            for i, entry in enumerate(entries, start=1)
        ]
        self._outbox.append_many(records)
        self.saved += len(records)
        return records

    # -- delivery -------------------------------------------------------------------------

    def _restart_sending(self) -> None:
        self._unacked.clear()
        self._resending.clear()
        self._order = self._acked_order = 0
        self._last_ack_ns = self._clock.monotonic_ns()
        self._cursor = 0
        self._more = True

    def _send(self, record: Record, now: int) -> None:
        self._uplink.publish_record(record)
        sends = self._resending.pop(record.record_id, 0) + 1
        interval = jittered_delay(self._resend_s, self._resend_max_s, sends, self._rng)
        self._order += 1
        self._unacked[record.record_id] = _Sent(
            record.seq, self._order, sends, now + int(interval * 1e9)
        )

    def _sending(self) -> bool:
        return (
            self._more
            and self._uplink.connected
            and self._outbox.ready
            and len(self._unacked) < self._max_unacked
        )

    def _wait_s(self) -> float:
        if not self._sending():
            return self._tick_s
        wait = self._bucket.wait_s(self._clock.monotonic_ns())
        return min(self._tick_s, max(0.002, wait))

    def _pump(self, now: int) -> None:
        """Publish the next records above the cursor, as the pace and the window allow."""
        if not self._sending():
            return
        room = self._max_unacked - len(self._unacked)
        n = min(self._bucket.available(now), room, _MAX_PUBLISH_BATCH)
        if n <= 0:
            return
        records = self._outbox.pending(n, after_seq=self._cursor)
        if len(records) < n:
            self._more = False
        sent = 0
        for record in records:
            self._cursor = record.seq
            if record.record_id not in self._unacked:
                self._send(record, now)
                sent += 1
        self._bucket.take(sent, now)

    def _resend_overdue(self, now: int) -> None:
        """Send again what the server seems to have lost (see the module's docstring)."""
        silent = now - self._last_ack_ns >= self._resend_ns
        overdue = [
            (sent.seq, rid)
            for rid, sent in self._unacked.items()
            if now >= sent.due_ns and (silent or sent.order < self._acked_order)
        ]
        if not overdue:
            return
        for _, rid in overdue:
            self._resending[rid] = self._unacked.pop(rid).sends
        self._cursor = min(self._cursor, min(seq for seq, _ in overdue) - 1)
        self._more = True
        log.info(
            "sending %d record(s) again: %s",
            len(overdue),
            "no acknowledgement in time" if silent else "the server acknowledged later records",
        )

    def _on_acked(self, ids: Sequence[str]) -> None:
        try:
            done = self._outbox.acknowledge(ids)
        except OutboxError as exc:
            # The records stay pending: they are sent again and acknowledged again.
            log.warning("acknowledgement not recorded: %s", exc)
            done = []
        self._last_ack_ns = self._clock.monotonic_ns()  # the server is alive
        for rid in ids:
            sent = self._unacked.pop(rid, None)
            if sent is not None:
                self._acked_order = max(self._acked_order, sent.order)
            self._resending.pop(rid, None)
        if done:
            self.confirmed += len(done)
            if self._last_saved is not None and self._last_saved in done:
                self._feedback.signal(Signal.CONFIRMED)  # the latest scan reached the server
            self._check_nearly_full()

    def _on_synced(self, max_seq: int) -> None:
        was_ready = self._outbox.ready
        try:
            self._outbox.learn_seq_floor(max_seq)
        except OutboxError:
            log.exception("cannot store the seq floor from the server")
            return
        if not was_ready and self._outbox.ready:
            log.info("seq floor from the server: %d; scans are accepted", max_seq)
            self._feedback.set_condition(Condition.AWAITING_SERVER, False)
            self._more = True

    # -- housekeeping ---------------------------------------------------------------------

    def _purge(self) -> None:
        try:
            self._outbox.purge(self._clock.wall() - self._retention_s)
        except OutboxError as exc:
            log.warning("purge of acknowledged records postponed: %s", exc)
        self._check_nearly_full()

    def _check_nearly_full(self) -> None:
        nearly_full = self._outbox.nearly_full
        if nearly_full != self._nearly_full:
            self._nearly_full = nearly_full
            if nearly_full:
                log.warning(
                    "outbox nearly full: %d of %d records unacknowledged",
                    len(self._outbox),
                    self._outbox.capacity,
                )
            self._feedback.set_condition(Condition.OUTBOX_NEARLY_FULL, nearly_full)

    # -- what remote commands may ask (agent.commands.StationControl) ---------------------

    def record(self, entries: Sequence[Entry]) -> int:
        """Store ``entries`` as records (sent with the rest of the backlog); returns how many."""
        records = self._store(entries)
        self._workflow.stored(records)
        self._more = True
        return len(records)

    def resend_pending(self) -> int:
        """Send every unacknowledged record again from the start (resynchronise)."""
        self._restart_sending()
        return len(self._outbox)

    def request_exit(self, code: int) -> None:
        """Stop the loop; the agent then exits with ``code`` (see ``agent.__main__``)."""
        self.exit_code = code
        if self._stop is not None:
            self._stop.set()


def _merged(kept: Sequence[Record], pending: Iterable[Record]) -> Iterator[Record]:
    """The history's records and the outbox's unacknowledged ones in seq order, each seq once
    (a record may be in both). ``pending`` is streamed, never held whole."""
    seen_upto = 0
    for record in heapq.merge(kept, pending, key=lambda r: r.seq):
        if record.seq > seen_upto:
            seen_upto = record.seq
            yield record
