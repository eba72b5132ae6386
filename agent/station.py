"""The station loop: scan -> workflow decision -> store -> feedback -> publish -> ack.

Everything that happens to a station (a scan, a scanner unplugged, the broker connecting, an
acknowledgement) arrives as an event on one queue and is handled on one thread, so the workflow
and the outbox never see concurrent calls.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence

from agent.errors import OutboxError, OutboxFullError
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
    Uplink,
    UplinkEvent,
    Workflow,
)
from protocol import Heartbeat, Record

log = logging.getLogger(__name__)

StationEvent = SourceEvent | UplinkEvent

_PRUNE_HISTORY_EVERY = 500
"""Records remembered between two prunings of the session history."""


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
        resend_after_s: a record published but not acknowledged after this long is sent again
            (the broker drops messages nobody was subscribed to; the server may have died
            before committing).
        history: where copies of the records the workflow needs after a restart are kept
            (``Workflow.retain``), since acknowledged records leave the outbox. Without it the
            workflow is restored from unacknowledged records only.
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
        history: SessionHistory | None = None,
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
        self._resend_ns = int(resend_after_s * 1e9)
        self._events: queue.Queue[StationEvent] = queue.Queue()
        self._seq = outbox.last_seq()
        self._started_ns = clock.monotonic_ns()
        self._last_heartbeat_ns: int | None = None
        self._sent_ns: dict[str, int] = {}  # record id -> when last published, this connection
        self._history = history
        self._remembered = 0  # records remembered since the history was last pruned
        self.saved = 0
        self.confirmed = 0

    def submit(self, event: StationEvent) -> None:
        """Hand an event to the station thread (thread-safe)."""
        self._events.put(event)

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set."""
        self.restore()
        self._feedback.set_condition(Condition.OFFLINE, True)
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
                event = self._events.get(timeout=self._tick_s)
            except queue.Empty:
                event = None
            if event is not None:
                self.handle(event)
            self.tick()

    def restore(self) -> None:
        """Rebuild the workflow's session from the history and the outbox, then prune the
        history to what the workflow still needs (called by ``run``; public for tests)."""
        kept = self._history.remembered() if self._history is not None else []
        by_seq = {r.seq: r for r in kept}
        by_seq.update((r.seq, r) for r in self._outbox.pending())
        self._workflow.restore(sorted(by_seq.values(), key=lambda r: r.seq))
        log.info("session restored from %d records (%d kept in history)", len(by_seq), len(kept))
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

    def tick(self) -> None:
        """Periodic work: heartbeat, resending overdue records, the caller's hook."""
        now = self._clock.monotonic_ns()
        if self._uplink.connected:
            last = self._last_heartbeat_ns
            if last is None or now - last >= self._heartbeat_ns:
                self._last_heartbeat_ns = now
                self._uplink.publish_heartbeat(self.heartbeat())
            if self._sent_ns and now - min(self._sent_ns.values()) >= self._resend_ns:
                overdue = {rid for rid, t in self._sent_ns.items() if now - t >= self._resend_ns}
                self._publish(r for r in self._outbox.pending() if r.record_id in overdue)
        if self._on_tick is not None:
            self._on_tick()

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            time=self._clock.wall(),
            uptime_s=(self._clock.monotonic_ns() - self._started_ns) / 1e9,
            outbox_depth=len(self._outbox),
        )

    def _publish(self, records: Iterable[Record]) -> None:
        now = self._clock.monotonic_ns()
        for record in records:
            self._uplink.publish_record(record)
            self._sent_ns[record.record_id] = now

    def handle(self, event: StationEvent) -> None:
        """Handle one event (public so tests can drive a station without threads)."""
        match event:
            case Scan():
                self._on_scan(event)
            case ScannerState(present=present):
                self._feedback.set_condition(Condition.SCANNER_MISSING, not present)
            case Connected():
                self._feedback.set_condition(Condition.OFFLINE, False)
                self._sent_ns.clear()
                self._last_heartbeat_ns = None
                self._publish(self._outbox.pending())
            case Disconnected():
                self._feedback.set_condition(Condition.OFFLINE, True)
            case Acked(record_ids=ids):
                done = self._outbox.acknowledge(ids)
                for rid in ids:
                    self._sent_ns.pop(rid, None)
                if done:
                    self.confirmed += len(done)
                    self._feedback.signal(Signal.CONFIRMED)
            case CommandReceived():
                log.info("command %s received (not handled yet)", event.command.name)

    def _on_scan(self, scan: Scan) -> None:
        decision = self._workflow.decide(scan)
        records: list[Record] = []
        failed = False
        try:
            for entry in decision.entries:
                records.append(self._store(entry))
        except OutboxFullError:
            log.error(
                "outbox full: scan refused (%d of %d records stored)",
                len(records),
                len(decision.entries),
            )
            failed = True
        except OutboxError:
            log.exception(
                "cannot save a scan (%d of %d records stored)", len(records), len(decision.entries)
            )
            failed = True
        # The session follows what was really stored, even when that is only part of it.
        self._workflow.stored(records)
        self._feedback.signal(Signal.STORAGE_FULL if failed else decision.signal)
        if self._uplink.connected:
            self._publish(records)
        # The signal promises the outbox, not the history: keep the history after it, so
        # staff never wait for it. It only has to be written before an acknowledgement can
        # take these records out of the outbox, which happens on this thread, later.
        if self._history is not None and records:
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

    def _store(self, entry: Entry) -> Record:
        self._seq += 1
        record = Record(
            record_id=uuid7(),
            station_id=self.station_id,
            seq=self._seq,
            boot_id=self.boot_id,
            wall_time=self._clock.wall(),
            mono_ns=self._clock.monotonic_ns(),
            clock_synced=self._clock.synchronized(),
            kind=entry.kind,
            code=entry.code,
            data=dict(entry.data),
        )
        try:
            self._outbox.append(record)
        except OutboxError:
            self._seq -= 1
            raise
        self.saved += 1
        return record
