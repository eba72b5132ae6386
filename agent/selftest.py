"""``swabline selftest``: a station checks itself and shows the result on its LEDs.

Checks, in order: LEDs and buzzer (the ``SELF_TEST`` pattern: the technician watches and
listens), the scanner (scan the printed test card within a timeout), the clock (NTP
synchronised), disk space and the outbox, the broker (TCP, TLS, credentials) and the server
(a ``selftest`` record goes through the outbox and the broker and must come back acknowledged,
exactly like a scan). Prints a checklist, signals ``CONFIRMED`` when everything passed and
``REJECTED`` otherwise, and exits 1 on any failure.

The agent must be stopped meanwhile: both would use the same outbox and MQTT identity (the
outbox lock refuses a second user).
"""

from __future__ import annotations

import argparse
import queue
import shutil
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

from agent import __version__
from agent.clock import SystemClock
from agent.config import StationConfig, load_config
from agent.errors import AgentError, OutboxError
from agent.identity import boot_id, uuid7
from agent.lock import outbox_lock
from agent.outbox import TinyDbOutbox
from agent.ports import (
    Acked,
    Clock,
    Connected,
    Disconnected,
    Feedback,
    Outbox,
    Scan,
    ScannerState,
    ScanSource,
    Signal,
    Synced,
    Uplink,
    UplinkEvent,
)
from agent.preflight import prepare
from protocol import Record
from protocol.cards import SELFTEST_CARD

MIN_FREE_BYTES = 200 * 1024 * 1024
MIN_FREE_FRACTION = 0.05
OUTBOX_WARN_FRACTION = 0.8
_E = TypeVar("_E")


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool | None
    """True passed, False failed, None skipped."""
    detail: str

    @property
    def mark(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]


@dataclass
class SelfTest:
    """The checks, with every collaborator injected (tests use fakes and a real broker).

    Args:
        config: the station's configuration.
        feedback: LEDs and buzzer.
        sources: the scanners.
        clock: time; only it sleeps.
        outbox: the station's outbox (held exclusively by the caller).
        uplink: a fresh, not yet started uplink with the station's identity.
        broker_probe: ``(host, port, ca_file)`` -> None, or raises ``OSError`` with the reason
            (TCP connect and TLS handshake).
        disk_usage: ``shutil.disk_usage``.
        card_timeout_s: how long to wait for the test card; 0 skips the scanner check.
        timeout_s: how long each network step may take.
    """

    config: StationConfig
    feedback: Feedback
    sources: Sequence[ScanSource]
    clock: Clock
    outbox: Outbox
    uplink: Uplink
    broker_probe: Callable[[str, int, str | None], None]
    disk_usage: Callable[[Path], DiskUsage] = field(default=shutil.disk_usage)  # type: ignore[assignment]
    card_timeout_s: float = 60.0
    timeout_s: float = 15.0
    say: Callable[[str], None] = print
    results: list[Check] = field(default_factory=list)

    def run(self) -> list[Check]:
        stop = threading.Event()
        uplink_events: queue.Queue[UplinkEvent] = queue.Queue()
        try:
            self._add(self.check_feedback())
            self._add(self.check_scanner(stop))
            self._add(self.check_clock())
            self._add(self.check_disk())
            self._add(self.check_outbox())
            broker = self.check_broker(uplink_events)
            self._add(broker)
            self._add(
                self.check_server(uplink_events)
                if broker.ok
                else Check("server", False, "not tried: the broker check failed")
            )
        finally:
            stop.set()
            self.uplink.close()
        passed = all(c.ok is not False for c in self.results)
        self.feedback.signal(Signal.CONFIRMED if passed else Signal.REJECTED)
        return self.results

    def _deadline(self, seconds: float) -> int:
        return self.clock.monotonic_ns() + int(seconds * 1e9)

    def _next(self, events: queue.Queue[_E], deadline_ns: int) -> _E | None:
        """The next event, or None once the clock passes ``deadline_ns`` (only the clock
        sleeps, so a fake clock runs the timeouts instantly)."""
        while self.clock.monotonic_ns() < deadline_ns:
            try:
                return events.get_nowait()
            except queue.Empty:
                self.clock.sleep(0.05)
        return None

    def _add(self, check: Check) -> None:
        self.results.append(check)
        self.say(f"[{check.mark}] {check.name:<9} {check.detail}")

    # -- the checks ------------------------------------------------------------------

    def check_feedback(self) -> Check:
        self.feedback.signal(Signal.SELF_TEST)
        self.clock.sleep(2.0)
        return Check(
            "leds", True, "test pattern played: every LED must have lit and the buzzer sounded"
        )

    def check_scanner(self, stop: threading.Event) -> Check:
        if self.card_timeout_s <= 0:
            return Check("scanner", None, "skipped (--card-timeout 0)")
        events: queue.Queue[Scan | ScannerState] = queue.Queue()
        for source in self.sources:
            threading.Thread(
                target=source.run,
                args=(events.put, stop),
                name=f"source-{source.name}",
                daemon=True,
            ).start()
        self.say(f"          scan the test card now ({self.card_timeout_s:.0f} s)...")
        missing = ""
        deadline = self._deadline(self.card_timeout_s)
        while (event := self._next(events, deadline)) is not None:
            if isinstance(event, ScannerState):
                missing = "" if event.present else f" ({event.source} reported missing)"
                continue
            if event.rejected:
                return Check("scanner", False, f"the scan was refused: {event.rejected}")
            if event.text == SELFTEST_CARD:
                return Check("scanner", True, f"test card read correctly on {event.source}")
            return Check(
                "scanner",
                False,
                f"read {event.text[:40]!r}, expected {SELFTEST_CARD!r}: set the scanner to the "
                "US keyboard layout with an Enter suffix, or to USB serial mode "
                "(docs/scanner-setup.md)",
            )
        return Check(
            "scanner",
            False,
            f"no scan within {self.card_timeout_s:.0f} s{missing}: is the scanner plugged in "
            "(ls -l /dev/swabline-scanner-*)?",
        )

    def check_clock(self) -> Check:
        if self.clock.synchronized():
            return Check("clock", True, "synchronised with NTP")
        return Check(
            "clock",
            False,
            "not synchronised with NTP: records are marked unsynced; check the network and "
            "'timedatectl timesync-status'",
        )

    def check_disk(self) -> Check:
        usage = self.disk_usage(self.config.outbox.path.parent)
        free_mb = usage.free / 2**20
        if usage.free < MIN_FREE_BYTES or usage.free < usage.total * MIN_FREE_FRACTION:
            return Check("disk", False, f"only {free_mb:.0f} MB free where the outbox lives")
        return Check("disk", True, f"{free_mb:.0f} MB free ({usage.free / usage.total:.0%})")

    def check_outbox(self) -> Check:
        pending, capacity = len(self.outbox), self.config.outbox.capacity
        detail = f"{pending} records waiting for the server (capacity {capacity})"
        if pending >= capacity * OUTBOX_WARN_FRACTION:
            return Check("outbox", False, detail + ": nearly full, the station cannot deliver")
        return Check("outbox", True, detail)

    def check_broker(self, events: queue.Queue[UplinkEvent]) -> Check:
        mqtt = self.config.mqtt
        where = f"{mqtt.host}:{mqtt.port}"
        ca = str(mqtt.ca_file) if mqtt.ca_file else None
        try:
            self.broker_probe(mqtt.host, mqtt.port, ca)
        except OSError as exc:
            return Check("broker", False, f"cannot reach {where}: {exc}")
        started = self.clock.monotonic_ns()
        self.uplink.start(events.put)
        deadline = self._deadline(self.timeout_s)
        while (event := self._next(events, deadline)) is not None:
            if isinstance(event, Connected):
                ms = (self.clock.monotonic_ns() - started) / 1e6
                tls = "TLS" if ca else "no TLS"
                return Check("broker", True, f"{where} ({tls}) accepted us in {ms:.0f} ms")
            if isinstance(event, Disconnected):
                return Check("broker", False, f"{where} refused us: {event.reason}")
        return Check("broker", False, f"no answer from {where} in {self.timeout_s:.0f} s")

    def check_server(self, events: queue.Queue[UplinkEvent]) -> Check:
        deadline = self._deadline(self.timeout_s)
        while not self.outbox.ready:  # a new outbox: the server's Sync gives the seq floor
            event = self._next(events, deadline)
            if event is None:
                return Check(
                    "server",
                    False,
                    f"no seq floor (Sync) from the server in {self.timeout_s:.0f} s: "
                    "is the server's ingest running?",
                )
            if isinstance(event, Synced):
                self.outbox.learn_seq_floor(event.max_seq)
        seq = self.outbox.last_seq() + 1
        record = Record(
            record_id=uuid7(),
            station_id=self.config.station_id,
            seq=seq,
            boot_id=boot_id(),
            wall_time=self.clock.wall(),
            mono_ns=self.clock.monotonic_ns(),
            clock_synced=self.clock.synchronized(),
            kind="selftest",
            data={"checks": {c.name: c.ok for c in self.results if c.ok is not None}},
        )
        try:
            self.outbox.append(record)  # through the outbox, like every scan
        except OutboxError as exc:
            return Check("server", False, f"cannot store the test record: {exc}")
        started = self.clock.monotonic_ns()
        self.uplink.publish_record(record)
        deadline = self._deadline(self.timeout_s)
        while (event := self._next(events, deadline)) is not None:
            if isinstance(event, Acked) and record.record_id in event.record_ids:
                self.outbox.acknowledge([record.record_id])
                ms = (self.clock.monotonic_ns() - started) / 1e6
                return Check("server", True, f"test record stored and acknowledged in {ms:.0f} ms")
        return Check(
            "server",
            False,
            f"no acknowledgement in {self.timeout_s:.0f} s: is the server's ingest running? "
            "(the test record stays in the outbox and is delivered later)",
        )


def probe_broker(host: str, port: int, ca_file: str | None, *, timeout_s: float = 10.0) -> None:
    """TCP connect, and the TLS handshake when a CA is configured; ``OSError`` says why not."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        if ca_file:
            ctx = ssl.create_default_context(cafile=ca_file)
            with ctx.wrap_socket(sock, server_hostname=host):
                pass


def run(args: argparse.Namespace) -> int:
    from agent.__main__ import build_feedback, build_sources
    from agent.mqtt import MqttUplink

    try:
        config = load_config(args.config)
        prepared = prepare(config)
    except AgentError as exc:
        print(f"swabline selftest: {exc}", file=sys.stderr)
        return 2
    clock = SystemClock()
    feedback = build_feedback(config)
    print(f"Self-test of station {config.station_id}")
    try:
        with (
            outbox_lock(config.outbox.path),
            TinyDbOutbox(config.outbox.path, capacity=config.outbox.capacity) as outbox,
        ):
            uplink = MqttUplink(
                station_id=config.station_id,
                host=config.mqtt.host,
                port=config.mqtt.port,
                username=config.mqtt.username or config.station_id,
                password=prepared.mqtt_password,
                ca_file=str(config.mqtt.ca_file) if config.mqtt.ca_file else None,
                keepalive_s=config.mqtt.keepalive_s,
                next_bd_seq=lambda: outbox.next_counter("bd_seq"),
                clock_wall=clock.wall,
                agent_version=__version__,
            )
            results = SelfTest(
                config=config,
                feedback=feedback,
                sources=build_sources(config) if args.card_timeout > 0 else [],
                clock=clock,
                outbox=outbox,
                uplink=uplink,
                broker_probe=lambda h, p, ca: probe_broker(h, p, ca, timeout_s=args.timeout),
                card_timeout_s=args.card_timeout,
                timeout_s=args.timeout,
            ).run()
    except AgentError as exc:
        print(f"swabline selftest: {exc}", file=sys.stderr)
        return 2
    finally:
        clock.sleep(1.5)  # let the result pattern play
        feedback.close()
    failed = [c.name for c in results if c.ok is False]
    print("RESULT: " + (f"FAIL ({', '.join(failed)})" if failed else "PASS"))
    return 1 if failed else 0
