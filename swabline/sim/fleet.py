"""A fleet of simulated stations on one asyncio loop.

Each simulated station is the real station loop, ``agent.station.Station`` (outbox until the
server's acknowledgement, resend of everything pending on reconnect, resend of what stays
unacknowledged as the station's resend rule says (``resend_after_s``, backing off up to
``resend_max_s``), heartbeats), with three adapters swapped: an in-memory
outbox (the simulator loads the network and the server, not a Pi's SD card), a workflow that
returns what ``staff.Staff`` planned, and ``uplink.AsyncioMqttUplink``. Nothing in the station
logic is re-implemented here, so a change to ``Station`` changes the simulation with it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.clock import SystemClock
from agent.config import MqttConfig
from agent.errors import OutboxFullError, OutboxNotReadyError
from agent.ports import Condition, Decision, Entry, Scan, Signal
from agent.station import Station
from protocol import Record
from swabline.sim.metrics import FleetMetrics, percentiles
from swabline.sim.staff import QueueEnd, Staff, StaffProfile
from swabline.sim.uplink import AsyncioMqttUplink, ConnectGate

log = logging.getLogger(__name__)

AGENT_VERSION = "sim"
_RECORDS_PER_PERSON = 1.2
"""About: one person_added each, plus the tube, its closing and the odd undo."""


class MemoryOutbox:
    """An ``Outbox`` in memory that also measures scan-to-acknowledgement latency.

    Not durable, on purpose: the simulator measures the broker and the server, not a Pi's SD
    card. It starts ``ready`` (a station that has reached the server before and knows where its
    sequence stands) unless told otherwise, and keeps the id and seq of every record it stored
    (``created``) so the run can be checked against the central database. Acknowledged
    records are forgotten at once (nothing to purge).
    """

    def __init__(
        self,
        *,
        metrics: FleetMetrics,
        last_seq: int = 0,
        ready: bool = True,
        capacity: int = 100_000,
    ) -> None:
        self._metrics = metrics
        self._pending: dict[str, tuple[Record, float]] = {}  # in seq order
        self._last_seq = last_seq
        self._ready = ready
        self._capacity = capacity
        self._counters: dict[str, int] = {}
        self.created: list[tuple[str, int]] = []  # (record_id, seq)

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def nearly_full(self) -> bool:
        return len(self._pending) >= self._capacity * 0.8

    def append(self, record: Record) -> None:
        self.append_many([record])

    def append_many(self, records: Sequence[Record]) -> None:
        if not self._ready:
            raise OutboxNotReadyError("seq floor unknown")
        if len(self._pending) + len(records) > self._capacity:
            raise OutboxFullError(f"outbox holds {self._capacity} unacknowledged records")
        now = time.monotonic()
        m = self._metrics
        for record in records:
            self._pending[record.record_id] = (record, now)
            self._last_seq = record.seq
            self.created.append((record.record_id, record.seq))
            m.created += 1
            m.kinds[record.kind] = m.kinds.get(record.kind, 0) + 1

    def pending(self, limit: int | None = None, *, after_seq: int = 0) -> list[Record]:
        out: list[Record] = []
        for record, _ in self._pending.values():
            if record.seq > after_seq:
                out.append(record)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def acknowledge(self, record_ids: Iterable[str]) -> list[str]:
        now = time.monotonic()
        done: list[str] = []
        m = self._metrics
        for rid in record_ids:
            item = self._pending.pop(rid, None)
            if item is None:
                m.repeat_acks += 1
                continue
            _record, stored_at = item
            done.append(rid)
            m.latencies_s.append(now - stored_at)
        m.acknowledged += len(done)
        return done

    def last_seq(self) -> int:
        return self._last_seq

    def next_counter(self, name: str) -> int:
        self._counters[name] = self._counters.get(name, 0) + 1
        return self._counters[name]

    def learn_seq_floor(self, max_seq: int) -> bool:
        if self._ready and max_seq <= self._last_seq:
            return False
        self._ready = True
        self._last_seq = max(self._last_seq, max_seq)
        return True

    def purge(self, acked_before: float) -> int:
        return 0

    def oldest_pending_time(self) -> float | None:
        first = next(iter(self._pending.values()), None)
        return None if first is None else first[0].wall_time

    def __len__(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        pass


class PlannedWorkflow:
    """A ``Workflow`` that stores what the simulated staff meant by their next scan."""

    def __init__(self) -> None:
        self.next: Entry | None = None

    def decide(self, scan: Scan) -> Decision:
        entry, self.next = self.next, None
        if entry is None:
            return Decision(entries=(), signal=Signal.REJECTED)
        return Decision(entries=(entry,), signal=Signal.SAVED)

    def restore(self, records: Iterable[Record]) -> None:
        pass

    def stored(self, records: Sequence[Record]) -> None:
        pass  # the plan, not the records, drives what simulated staff scan next

    def retain(self, records: Iterable[Record]) -> list[Record]:
        return []


class SilentFeedback:
    """A station with no LEDs and no buzzer."""

    def signal(self, signal: Signal) -> None:
        pass

    def set_condition(self, condition: Condition, active: bool) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Credentials:
    station_id: str
    password: str | None


_STATION = MqttConfig()


@dataclass(frozen=True)
class SimOptions:
    """What the simulated fleet does (see ``swabline simulate --help`` for each knob)."""

    rate: float = 100.0
    records_per_station: int | None = None
    duration_s: float | None = None
    busy_fraction: float = 0.5
    backlog: int = 0
    drops_per_station_hour: float = 0.0
    outage_s: float = 10.0
    storm_at_s: float | None = None
    storm_outage_s: float = 30.0
    storm_fraction: float = 1.0
    # A real station's settings: the defaults of the station's [mqtt] section.
    heartbeat_s: float = _STATION.heartbeat_s
    resend_after_s: float = _STATION.resend_after_s
    resend_max_s: float = _STATION.resend_max_s
    max_inflight: int = _STATION.max_inflight
    keepalive_s: int = _STATION.keepalive_s
    reconnect_min_s: float = _STATION.reconnect_min_s
    reconnect_max_s: float = _STATION.reconnect_max_s
    connect_timeout_s: float = _STATION.connect_timeout_s
    drain_per_s: float = _STATION.drain_per_s
    max_unacked: int = _STATION.max_unacked
    connect_concurrency: int = 256
    drain_timeout_s: float = 600.0
    seed: int = 1
    profile: StaffProfile = field(default_factory=StaffProfile)


class SimStation:
    """One simulated station: ``Station`` + ``MemoryOutbox`` + ``AsyncioMqttUplink`` + staff."""

    def __init__(
        self,
        *,
        number: int,
        credentials: Credentials,
        host: str,
        port: int,
        options: SimOptions,
        metrics: FleetMetrics,
        gate: ConnectGate,
        clock: SystemClock,
        last_seq: int = 0,
        on_change: Callable[[AsyncioMqttUplink, bool], None] | None = None,
    ) -> None:
        self.number = number
        self.station_id = credentials.station_id
        self._rng = random.Random(f"{options.seed}-{number}")
        self._metrics = metrics
        self.outbox = MemoryOutbox(metrics=metrics, last_seq=last_seq)
        self.uplink = AsyncioMqttUplink(
            station_id=credentials.station_id,
            host=host,
            port=port,
            username=credentials.station_id,
            password=credentials.password,
            next_bd_seq=lambda: self.outbox.next_counter("bd_seq"),
            clock_wall=clock.wall,
            agent_version=AGENT_VERSION,
            gate=gate,
            rng=self._rng,
            on_change=on_change,
            keepalive_s=options.keepalive_s,
            max_inflight=options.max_inflight,
            reconnect_min_s=options.reconnect_min_s,
            reconnect_max_s=options.reconnect_max_s,
            connect_timeout_s=options.connect_timeout_s,
        )
        self.workflow = PlannedWorkflow()
        self.station = Station(
            station_id=credentials.station_id,
            boot_id=str(uuid.UUID(int=self._rng.getrandbits(128))),
            sources=(),
            workflow=self.workflow,
            outbox=self.outbox,
            uplink=self.uplink,
            feedback=SilentFeedback(),
            clock=clock,
            heartbeat_s=options.heartbeat_s,
            resend_after_s=options.resend_after_s,
            resend_max_s=options.resend_max_s,
            drain_per_s=options.drain_per_s,
            max_unacked=options.max_unacked,
        )
        self.staff = Staff(number, self._rng, options.profile)
        # A station busy when the run starts is somewhere in the middle of its queue.
        self._steps = self.staff.steps(first_queue_share=self._rng.random())
        self.made = 0
        self.queue_records = 0

    def scan_next(self) -> bool:
        """Scan the next thing; returns True when a queue of people has been served."""
        step = next(self._steps)
        if isinstance(step, QueueEnd):
            return True
        self.workflow.next = step.entry
        self.station.handle(Scan(text=step.code, source="sim"))
        self.staff.stored(step.entry.kind, self.outbox.last_seq())
        self.made += 1
        self.queue_records += 1
        return False

    def fill_backlog(self, records: int) -> None:
        """Store ``records`` records while offline, as a station does during an outage."""
        while self.made < records:
            self.scan_next()

    async def staff_loop(self, rate: float, options: SimOptions, until: Callable[[], bool]) -> None:
        """Scan at ``rate`` records/s on average: bursts while a queue is served, then idle."""
        rng = self._rng
        limit = options.records_per_station
        busy_rate = rate / options.busy_fraction
        idle_factor = (1 - options.busy_fraction) / options.busy_fraction
        # Start each station at a random point of its serve/idle cycle, so that the fleet
        # offers ``rate`` from the first second instead of every queue arriving at once.
        if rng.random() >= options.busy_fraction:
            low, high = options.profile.queue_persons
            mean_queue_s = (low + high) / 2 * _RECORDS_PER_PERSON / busy_rate
            await asyncio.sleep(rng.expovariate(1 / max(mean_queue_s * idle_factor, 1e-3)))
        else:
            await asyncio.sleep(rng.expovariate(busy_rate))
        while not until() and (limit is None or self.made < limit):
            if self.scan_next():
                served_s = self.queue_records / busy_rate
                self.queue_records = 0
                await asyncio.sleep(rng.expovariate(1 / max(served_s * idle_factor, 1e-3)))
            else:
                await asyncio.sleep(rng.expovariate(busy_rate))


def raise_open_files_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE to at least ``needed`` where allowed; returns the soft limit now.

    Each station holds one socket; a broker started from this process inherits the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    want = needed if hard == resource.RLIM_INFINITY else max(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, want))
    except (ValueError, OSError):
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Timeline:
    started: float = 0.0
    connected_all: float | None = None
    generation_done: float | None = None
    drained: float | None = None
    first_ack: float | None = None


class Fleet:
    """Runs ``len(credentials)`` stations against ``host:port`` until they are done and drained.

    ``on_progress`` is called about four times a second with the fleet (for a display).
    """

    def __init__(
        self,
        *,
        credentials: list[Credentials],
        host: str,
        port: int,
        options: SimOptions,
        last_seqs: dict[str, int] | None = None,
        on_progress: Callable[[Fleet], None] | None = None,
    ) -> None:
        self.options = options
        self.metrics = FleetMetrics()
        self.timeline = Timeline()
        self._on_progress = on_progress
        self._host, self._port = host, port
        self._credentials = credentials
        self._last_seqs = last_seqs or {}
        self.stations: list[SimStation] = []
        self._stop_generating = False
        self._rng = random.Random(f"{options.seed}-fleet")
        self.phase = "starting"
        self.series: list[tuple[float, int, int, int]] = []
        """Once a second: (s since start, records made, acknowledged, stations connected)."""

    @property
    def target_records(self) -> int | None:
        per = self.options.records_per_station
        if per is None:
            return None
        return len(self.stations) * max(per, self.options.backlog)

    def _on_change(self, _uplink: AsyncioMqttUplink, up: bool) -> None:
        m = self.metrics
        if up:
            m.connects += 1
            m.connected_now += 1
        else:
            m.connected_now -= 1
            if self.phase != "closing":
                m.drops += 1

    async def run(self) -> dict[str, Any]:
        """Run the whole scenario; returns the counters and timings (see ``result``)."""
        opts = self.options
        raise_open_files_limit(len(self._credentials) + 1024)
        gate = ConnectGate(opts.connect_concurrency)
        clock = SystemClock()
        self.stations = [
            SimStation(
                number=i,
                credentials=c,
                host=self._host,
                port=self._port,
                options=opts,
                metrics=self.metrics,
                gate=gate,
                clock=clock,
                last_seq=self._last_seqs.get(c.station_id, 0),
                on_change=self._on_change,
            )
            for i, c in enumerate(self._credentials, 1)
        ]
        backlog_s = 0.0
        if opts.backlog:
            self.phase = "filling offline backlog"
            t = time.monotonic()
            for s in self.stations:
                s.fill_backlog(opts.backlog)
                if s.number % 200 == 0:
                    self._progress()
                    await asyncio.sleep(0)
            backlog_s = time.monotonic() - t
        tl = self.timeline
        tl.started = time.monotonic()
        self.phase = "connecting"
        for s in self.stations:
            s.uplink.start(s.station.handle)
        background = [
            asyncio.create_task(self._housekeeping()),
            asyncio.create_task(self._pump()),
            asyncio.create_task(self._progress_loop()),
        ]
        if opts.drops_per_station_hour > 0:
            background.append(asyncio.create_task(self._random_drops()))
        if opts.storm_at_s is not None:
            background.append(asyncio.create_task(self._storm()))
        staff: list[asyncio.Task[None]] = []
        per_station_rate = opts.rate / max(len(self.stations), 1)
        generates = opts.records_per_station is None or opts.records_per_station > opts.backlog
        try:
            if generates and (opts.records_per_station is not None or opts.duration_s):
                self.phase = "running"
                staff = [
                    asyncio.create_task(
                        s.staff_loop(per_station_rate, opts, lambda: self._stop_generating)
                    )
                    for s in self.stations
                ]
                if opts.duration_s:
                    await asyncio.wait(staff, timeout=opts.duration_s)
                    self._stop_generating = True
                    for task in staff:
                        task.cancel()  # most are asleep between scans or between queues
                await asyncio.gather(*staff, return_exceptions=True)
            tl.generation_done = time.monotonic()
            self.phase = "draining"
            deadline = time.monotonic() + opts.drain_timeout_s
            while self.metrics.pending > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.metrics.pending == 0:
                tl.drained = time.monotonic()
            self.phase = "done" if tl.drained else "drain timed out"
        finally:
            self._stop_generating = True
            for task in staff + background:
                task.cancel()
            await asyncio.gather(*staff, *background, return_exceptions=True)
            self._progress()
            self.phase = "closing"
            for s in self.stations:
                s.uplink.close()
            await asyncio.sleep(0.2)
        return self.result(backlog_fill_s=backlog_s)

    def result(self, *, backlog_fill_s: float = 0.0) -> dict[str, Any]:
        m, tl, opts = self.metrics, self.timeline, self.options
        m.publishes = sum(s.uplink.published for s in self.stations)
        end = tl.drained or time.monotonic()
        elapsed = end - tl.started
        lat = percentiles(m.latencies_s)
        resends = m.publishes - m.created
        return {
            "stations": len(self.stations),
            "offered_rate_rps": opts.rate,
            "backlog_per_station": opts.backlog,
            "records_per_station": opts.records_per_station,
            "duration_s": opts.duration_s,
            "sent": m.created,
            "publishes": m.publishes,
            "resends": max(resends, 0),
            "acknowledged": m.acknowledged,
            "unacknowledged": m.pending,
            "repeat_acks": m.repeat_acks,
            "connects": m.connects,
            "drops": m.drops,
            "kinds": dict(sorted(m.kinds.items())),
            "stations_scanned": sum(1 for s in self.stations if s.made),
            "elapsed_s": elapsed,
            "drained": tl.drained is not None,
            "drain_s": None if tl.drained is None else tl.drained - tl.started,
            "drain_after_generation_s": None
            if tl.drained is None or tl.generation_done is None
            else tl.drained - tl.generation_done,
            "connect_all_s": None if tl.connected_all is None else tl.connected_all - tl.started,
            "backlog_fill_s": backlog_fill_s,
            "throughput_rps": m.acknowledged / elapsed if elapsed > 0 else 0.0,
            "offered_measured_rps": None
            if tl.generation_done is None or opts.backlog
            else m.created / max(tl.generation_done - tl.started, 1e-9),
            "latency_s": lat,
            "latency_max_s": max(m.latencies_s) if m.latencies_s else None,
            "simulator_cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 2),
            "series": self.series[:: max(1, len(self.series) // 300)],
        }

    async def _housekeeping(self) -> None:
        """paho keepalive and ``Station.tick`` (heartbeat, resends, paced sending of the
        backlog) for every station once a second, spread over the second."""
        slice_size = 500
        while True:
            t0 = time.monotonic()
            for i in range(0, len(self.stations), slice_size):
                for s in self.stations[i : i + slice_size]:
                    s.uplink.misc()
                    s.station.tick()
                await asyncio.sleep(0)
            m = self.metrics
            m.publishes = sum(s.uplink.published for s in self.stations)
            self.series.append(
                (round(t0 - self.timeline.started, 2), m.created, m.acknowledged, m.connected_now)
            )
            if self.timeline.connected_all is None and m.connected_now == len(self.stations):
                self.timeline.connected_all = time.monotonic()
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

    async def _pump(self) -> None:
        """A real station ticks as soon as its pace allows (``Station.run``); ticking the
        stations that have records waiting every 0.1 s keeps a backlog draining at their
        ``drain_per_s`` (the token bucket holds a tenth of a second's worth)."""
        while True:
            t0 = time.monotonic()
            for n, s in enumerate(self.stations):
                if s.uplink.connected and len(s.outbox):
                    s.station.tick()
                if n % 500 == 499:
                    await asyncio.sleep(0)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))

    async def _progress_loop(self) -> None:
        while True:
            self._progress()
            await asyncio.sleep(0.25)

    def _progress(self) -> None:
        if self.timeline.connected_all is None and self.metrics.connected_now == len(self.stations):
            self.timeline.connected_all = time.monotonic()
        if self._on_progress is not None:
            self._on_progress(self)

    async def _random_drops(self) -> None:
        """Each station loses its network now and then (Poisson), for ``outage_s`` on average."""
        opts = self.options
        fleet_rate_per_s = opts.drops_per_station_hour * len(self.stations) / 3600
        while True:
            await asyncio.sleep(self._rng.expovariate(fleet_rate_per_s))
            s = self._rng.choice(self.stations)
            if s.uplink.connected:
                s.uplink.go_offline()
                outage = self._rng.expovariate(1 / opts.outage_s)
                asyncio.get_running_loop().call_later(outage, s.uplink.go_online)

    async def _storm(self) -> None:
        """A share of the fleet loses the network together and gets it back together."""
        opts = self.options
        assert opts.storm_at_s is not None
        await asyncio.sleep(opts.storm_at_s)
        count = round(len(self.stations) * opts.storm_fraction)
        hit = self._rng.sample(self.stations, count)
        for s in hit:
            s.uplink.go_offline()
        await asyncio.sleep(opts.storm_outage_s)
        for s in hit:
            s.uplink.go_online()
