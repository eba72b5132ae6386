"""``swabline selftest``: a station checks itself and shows the result on its LEDs.

Checks, in order: LEDs and buzzer (the ``SELF_TEST`` pattern is shown; only a person can see
and hear it, so the checklist says ``SHOWN`` until the technician confirms by scanning the test
card), the scanner (the printed test card read within a timeout), the clock (NTP
synchronised), disk space and the outbox, the broker (a round trip: connect with the station's
credentials and client id, over TLS with its CA, and publish a heartbeat with QoS 1 that the
broker must acknowledge, so credentials and ACLs are checked, not just the port) and the server
(a ``selftest`` record goes through the outbox and the broker and must come back acknowledged,
exactly like a scan). Prints a checklist, signals ``CONFIRMED`` when nothing failed and
``REJECTED`` otherwise, and exits 1 on any failure.

The agent must be stopped meanwhile: both would use the same outbox and MQTT identity (the
outbox lock refuses a second user).
"""

from __future__ import annotations

import argparse
import queue
import shutil
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
from protocol import Heartbeat, Record, encode
from protocol.cards import SELFTEST_CARD
from protocol.topics import StationTopic, topic

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
    """True passed, False failed, None not decided here (skipped, or shown to a person)."""
    detail: str
    shown: bool = False
    """Shown to the technician, who alone can tell whether it worked (ok is then None)."""

    @property
    def mark(self) -> str:
        if self.ok is None and self.shown:
            return "SHOWN"
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]


class BrokerCheckError(OSError):
    """The broker round trip failed; the message says where and why."""


BrokerRoundTrip = Callable[[Heartbeat], None]
"""Publish the heartbeat with QoS 1 as the station and wait for the broker's acknowledgement;
``BrokerCheckError`` (or any ``OSError``) with the reason otherwise."""


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
        broker_round_trip: publishes a heartbeat as the station and waits for the broker's
            PUBACK (``mqtt_round_trip``); raises ``OSError`` with the reason.
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
    broker_round_trip: BrokerRoundTrip
    disk_usage: Callable[[Path], DiskUsage] = field(default=shutil.disk_usage)  # type: ignore[assignment]
    card_timeout_s: float = 60.0
    timeout_s: float = 15.0
    say: Callable[[str], None] = print
    results: list[Check] = field(default_factory=list)
    _started_ns: int = field(default=0, init=False)

    def run(self) -> list[Check]:
        stop = threading.Event()
        self._started_ns = self.clock.monotonic_ns()
        try:
            self._add(self.check_feedback())
            scanner = self.check_scanner(stop)
            self._add(scanner)
            if scanner.ok:  # the card was scanned after the pattern: the technician confirms
                self._add(Check("leds", True, "confirmed by the technician (test card scanned)"))
            self._add(self.check_clock())
            self._add(self.check_disk())
            self._add(self.check_outbox())
            broker = self.check_broker()
            self._add(broker)
            self._add(
                self.check_server()
                if broker.ok
                else Check("server", False, "not tried: the broker check failed")
            )
        finally:
            stop.set()
            self.uplink.close()
        passed = all(c.ok is not False for c in self.results)
        self.feedback.signal(Signal.CONFIRMED if passed else Signal.REJECTED)
        return self.results

    def final(self) -> list[Check]:
        """The last word on each check (the LEDs' line is replaced by its confirmation)."""
        last = {c.name: c for c in self.results}
        return list(last.values())

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
        confirm = "; if they did, scan the test card to confirm" if self.card_timeout_s > 0 else ""
        return Check(
            "leds",
            None,
            "test pattern shown: check by eye and ear that every LED lit and the buzzer "
            f"sounded{confirm}",
            shown=True,
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
        self.say(
            "          if every LED lit and the buzzer sounded, scan the test card now "
            f"({self.card_timeout_s:.0f} s)..."
        )
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
            "(ls -l /dev/swabline-scanner-*)? (Not scanned because an LED or the buzzer "
            "failed? Fix that first.)",
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

    def check_broker(self) -> Check:
        mqtt = self.config.mqtt
        where = f"{mqtt.host}:{mqtt.port} ({'TLS' if mqtt.ca_file else 'no TLS'})"
        heartbeat = Heartbeat(
            time=self.clock.wall(),
            uptime_s=(self.clock.monotonic_ns() - self._started_ns) / 1e9,
            outbox_depth=len(self.outbox),
            outbox_capacity=self.config.outbox.capacity,
            last_seq=self.outbox.last_seq(),
            agent_version=__version__,
            clock_synced=self.clock.synchronized(),
        )
        started = self.clock.monotonic_ns()
        try:
            self.broker_round_trip(heartbeat)
        except OSError as exc:
            return Check("broker", False, f"{where}: {exc}")
        ms = (self.clock.monotonic_ns() - started) / 1e6
        return Check("broker", True, f"{where} took our heartbeat (QoS 1) in {ms:.0f} ms")

    def check_server(self) -> Check:
        events: queue.Queue[UplinkEvent] = queue.Queue()
        self.uplink.start(events.put)
        deadline = self._deadline(self.timeout_s)
        while True:  # connected again, as the agent would be
            event = self._next(events, deadline)
            if event is None:
                return Check("server", False, f"no connection in {self.timeout_s:.0f} s")
            if isinstance(event, Connected):
                break
            if isinstance(event, Disconnected):
                return Check("server", False, f"the broker refused us: {event.reason}")
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


def mqtt_round_trip(
    heartbeat: Heartbeat,
    *,
    host: str,
    port: int,
    station_id: str,
    username: str,
    password: str | None,
    ca_file: str | None,
    timeout_s: float,
) -> None:
    """Connect as the station (its client id, over TLS with ``ca_file`` if given), publish
    ``heartbeat`` on its heartbeat topic with QoS 1 and wait for the broker's PUBACK.

    Raises ``BrokerCheckError`` saying which step failed: the connection, the CONNACK (wrong
    credentials, a client id the broker does not bind to them), or the PUBACK (an ACL refusal).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.reasoncodes import ReasonCode

    connack: queue.Queue[ReasonCode] = queue.Queue()
    puback: queue.Queue[ReasonCode] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=station_id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=False,
    )
    client.username_pw_set(username, password)
    if ca_file:
        client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect = lambda _c, _u, _f, rc, _p: connack.put(rc)
    client.on_publish = lambda _c, _u, _mid, rc, _p: puback.put(rc)
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise BrokerCheckError(f"cannot connect: {exc}") from None
    client.loop_start()
    try:
        try:
            rc = connack.get(timeout=timeout_s)
        except queue.Empty:
            raise BrokerCheckError(f"no answer to our connection in {timeout_s:.0f} s") from None
        if rc.is_failure:
            raise BrokerCheckError(f"refused us: {rc}")
        client.publish(topic(station_id, StationTopic.HEARTBEAT), encode(heartbeat), qos=1)
        try:
            rc = puback.get(timeout=timeout_s)
        except queue.Empty:
            raise BrokerCheckError(f"no PUBACK for our heartbeat in {timeout_s:.0f} s") from None
        if rc.is_failure:  # "No matching subscribers" (the server is away) is a success
            raise BrokerCheckError(f"refused our heartbeat: {rc} (the station's ACL)")
    finally:
        client.disconnect()
        client.loop_stop()


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
            selftest = SelfTest(
                config=config,
                feedback=feedback,
                sources=build_sources(config) if args.card_timeout > 0 else [],
                clock=clock,
                outbox=outbox,
                uplink=uplink,
                broker_round_trip=lambda heartbeat: mqtt_round_trip(
                    heartbeat,
                    host=config.mqtt.host,
                    port=config.mqtt.port,
                    station_id=config.station_id,
                    username=config.mqtt.username or config.station_id,
                    password=prepared.mqtt_password,
                    ca_file=str(config.mqtt.ca_file) if config.mqtt.ca_file else None,
                    timeout_s=args.timeout,
                ),
                card_timeout_s=args.card_timeout,
                timeout_s=args.timeout,
            )
            selftest.run()
            results = selftest.final()
    except AgentError as exc:
        print(f"swabline selftest: {exc}", file=sys.stderr)
        return 2
    finally:
        clock.sleep(1.5)  # let the result pattern play
        feedback.close()
    print("RESULT: " + verdict(results))
    return 1 if any(c.ok is False for c in results) else 0


def verdict(results: Sequence[Check]) -> str:
    """The checklist's last line: PASS or FAIL, and what a person still has to look at."""
    failed = [c.name for c in results if c.ok is False]
    unconfirmed = [c.name for c in results if c.ok is None and c.shown]
    look = (
        f" (not confirmed, check by eye and ear: {', '.join(unconfirmed)})" if unconfirmed else ""
    )
    return (f"FAIL ({', '.join(failed)})" if failed else "PASS") + look
