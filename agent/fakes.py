"""Test doubles for the station's seams, shipped so that a laptop can run a station."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from agent.health import HealthReading
from agent.ports import (
    Acked,
    Condition,
    Connected,
    Disconnected,
    Scan,
    Signal,
    SourceSink,
    UplinkSink,
)
from protocol import CommandResult, Heartbeat, Record


class FakeScanSource:
    """Emits the given codes, then stops."""

    def __init__(self, codes: Iterable[str], *, name: str = "fake") -> None:
        self.name = name
        self._codes = list(codes)

    def run(self, sink: SourceSink, stop: threading.Event) -> None:
        for code in self._codes:
            if stop.is_set():
                return
            sink(Scan(text=code, source=self.name))


class RecordingFeedback:
    """Records every signal and condition change, in order."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self.conditions: dict[Condition, bool] = {}
        self.closed = False

    def signal(self, signal: Signal) -> None:
        self.signals.append(signal)

    def set_condition(self, condition: Condition, active: bool) -> None:
        self.conditions[condition] = active

    def close(self) -> None:
        self.closed = True


class FakeClock:
    """A clock that only moves when told to; ``sleep`` advances it."""

    def __init__(self, wall: float = 1_780_000_000.0, *, synced: bool = True) -> None:
        self._wall = wall
        self._mono_ns = 1_000_000_000
        self.synced = synced

    def wall(self) -> float:
        return self._wall

    def monotonic_ns(self) -> int:
        return self._mono_ns

    def synchronized(self) -> bool:
        return self.synced

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono_ns += int(seconds * 1e9)


class FakeUplink:
    """An uplink that records what was published and acknowledges only when told to."""

    def __init__(self, *, connected: bool = True) -> None:
        self.published: list[Record] = []
        self.heartbeats: list[Heartbeat] = []
        self.command_results: list[CommandResult] = []
        self._connected = connected
        self._sink: UplinkSink | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self, sink: UplinkSink) -> None:
        self._sink = sink
        if self._connected:
            sink(Connected())

    def publish_record(self, record: Record) -> None:
        self.published.append(record)

    def publish_heartbeat(self, heartbeat: Heartbeat) -> None:
        self.heartbeats.append(heartbeat)

    def publish_command_result(self, result: CommandResult) -> None:
        self.command_results.append(result)

    def set_connected(self, connected: bool) -> None:
        """Simulate the broker connection coming or going."""
        self._connected = connected
        if self._sink is not None:
            self._sink(Connected() if connected else Disconnected(reason="fake"))

    def ack(self, record_ids: Iterable[str]) -> None:
        if self._sink is not None:
            self._sink(Acked(tuple(record_ids)))

    def close(self) -> None:
        self._sink = None


class FakeHealthProbe:
    """Returns ``reading``; tests change it between heartbeats."""

    def __init__(self, reading: HealthReading | None = None) -> None:
        self.reading = reading or HealthReading()

    def read(self) -> HealthReading:
        return self.reading
