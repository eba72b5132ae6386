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
from typing import TYPE_CHECKING

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
    Signal,
    SourceEvent,
    Uplink,
    UplinkEvent,
    Workflow,
)
from protocol import Heartbeat, Record

if TYPE_CHECKING:
    from agent.ops import StationOps

log = logging.getLogger(__name__)

StationEvent = SourceEvent | UplinkEvent


class RecordEveryScan:
    """The simplest workflow: every accepted scan is stored as a ``scan`` record."""

    def decide(self, scan: Scan) -> Decision:
        if scan.rejected:
            return Decision(entries=(), signal=Signal.REJECTED)
        return Decision(entries=(Entry(kind="scan", code=scan.text),), signal=Signal.SAVED)

    def restore(self, records: Iterable[Record]) -> None:
        pass  # keeps no state


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
        ops: heartbeat telemetry and remote commands (``agent.ops``); optional.
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
        ops: StationOps | None = None,
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
        self._workflow.restore(self._outbox.pending())
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
        if self._ops is not None:
            self._ops.tick()

    def heartbeat(self) -> Heartbeat:
        heartbeat = Heartbeat(
            time=self._clock.wall(),
            uptime_s=(self._clock.monotonic_ns() - self._started_ns) / 1e9,
            outbox_depth=len(self._outbox),
        )
        if self._ops is not None:
            fields = {**self._ops.heartbeat_fields(), **heartbeat.model_dump(exclude_none=True)}
            heartbeat = Heartbeat.model_validate(fields)
        return heartbeat

    def _publish(self, records: Iterable[Record]) -> None:
        now = self._clock.monotonic_ns()
        for record in records:
            self._uplink.publish_record(record)
            self._sent_ns[record.record_id] = now

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
                if self._ops is not None:
                    self._ops.on_command(event.command, self)
                else:
                    log.info("command %s ignored: no ops hooks", event.command.name)

    def _on_scan(self, scan: Scan) -> None:
        decision = self._workflow.decide(scan)
        try:
            records = [self._store(entry) for entry in decision.entries]
        except OutboxFullError:
            log.error("outbox full: scan %r refused", scan.text[:40])
            self._feedback.signal(Signal.STORAGE_FULL)
            return
        except OutboxError:
            log.exception("cannot save scan %r", scan.text[:40])
            self._feedback.signal(Signal.STORAGE_FULL)
            return
        self._feedback.signal(decision.signal)
        if self._uplink.connected:
            self._publish(records)

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

    # --- what remote commands may ask (agent.commands.StationControl) ---------------------------

    def record(self, entries: Sequence[Entry]) -> int:
        """Store ``entries`` as records and send them if connected; returns how many."""
        records = [self._store(entry) for entry in entries]
        if self._uplink.connected:
            self._publish(records)
        return len(records)

    def resend_pending(self) -> int:
        """Send every unacknowledged record again now (resynchronise); returns how many."""
        pending = self._outbox.pending()
        if self._uplink.connected:
            self._publish(pending)
        return len(pending)

    def request_exit(self, code: int) -> None:
        """Stop the loop; the agent then exits with ``code`` (see ``agent.__main__``)."""
        self.exit_code = code
        if self._stop is not None:
            self._stop.set()
