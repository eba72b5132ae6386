"""Test doubles for the station's seams, shipped so that a laptop can run a station."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from agent.errors import ScannerError
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


class FakeInputDevice:
    """An input device node fed by a test: ``push`` events, ``unplug`` it.

    Its ``fileno`` is a pipe, so ``select()`` works as on a real device; after ``unplug``,
    ``read`` fails with ``ENODEV`` as the kernel's evdev does.
    """

    def __init__(self, path: str, *, name: str = "Fake scanner") -> None:
        self.path = path
        self.name = name
        self.grabbed = False
        self.closed = False
        self.unplugged = False
        self.held: list[int] = []
        self.grab_error: OSError | None = None
        self._events: list[object] = []
        self._lock = threading.Lock()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)

    def reopen(self) -> None:
        """Open the node again after ``close`` (a new file descriptor, as ``open()`` gives)."""
        with self._lock:
            if self.closed:
                self._r, self._w = os.pipe()
                os.set_blocking(self._r, False)
                self.closed = False
                self.grabbed = False

    def fileno(self) -> int:
        return self._r

    def push(self, events: Iterable[object]) -> None:
        """Queue events for ``read`` and wake up ``select()``."""
        with self._lock:
            self._events.extend(events)
            if not self.closed:
                os.write(self._w, b"!")

    def wait_read(self, timeout: float = 10.0) -> bool:
        """Wait until every pushed event has been read; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._events:
                    return True
            time.sleep(0.001)
        return False

    def unplug(self) -> None:
        with self._lock:
            self.unplugged = True
            if not self.closed:
                os.write(self._w, b"!")

    def read(self) -> list[object]:
        with self._lock:
            if self.closed:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            with contextlib.suppress(BlockingIOError):
                os.read(self._r, 4096)
            if self.unplugged:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            events, self._events = self._events, []
        if not events:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return events

    def grab(self) -> None:
        if self.grab_error is not None:
            raise self.grab_error
        self.grabbed = True

    def active_keys(self) -> list[int]:
        return list(self.held)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                os.close(self._r)
                os.close(self._w)


class FakeInputBus:
    """Device nodes that come and go, for ``EvdevScanSource(open_device=..., find_devices=...)``.

    ``plug(path)`` makes a new ``FakeInputDevice`` appear at ``path`` (as replugging a scanner
    creates a new kernel device); ``unplug(path)`` makes it fail and disappear.
    """

    def __init__(self) -> None:
        self.devices: dict[str, FakeInputDevice] = {}
        self.opened: list[FakeInputDevice] = []
        self._lock = threading.Lock()

    def plug(self, path: str, *, name: str = "Fake scanner") -> FakeInputDevice:
        device = FakeInputDevice(path, name=name)
        with self._lock:
            self.devices[path] = device
        return device

    def unplug(self, path: str) -> None:
        with self._lock:
            device = self.devices.pop(path)
        device.unplug()

    def find(self, spec: str) -> list[str]:
        with self._lock:
            paths = sorted(self.devices)
        return [p for p in paths if fnmatch.fnmatchcase(p, spec)]

    def open(self, path: str) -> FakeInputDevice:
        with self._lock:
            device = self.devices.get(path)
        if device is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        device.reopen()
        self.opened.append(device)
        return device


class FakeFrameProvider:
    """Camera frames from a list, for ``CameraScanSource(frames=...)``.

    Each ``capture`` returns the next frame and advances ``now`` (pass it as the source's
    ``monotonic``) by one frame interval, so frame times are exact and nothing sleeps. After the
    last frame it sets ``stop`` (when given) and keeps returning the last frame. ``fail_starts``
    makes the first starts fail as an absent camera does.
    """

    def __init__(
        self,
        frames: Iterable[object],
        *,
        interval_s: float = 0.1,
        stop: threading.Event | None = None,
        fail_starts: int = 0,
    ) -> None:
        self.frames = list(frames)
        self.interval_s = interval_s
        self.stop = stop
        self.fail_starts = fail_starts
        self.starts = 0
        self.closes = 0
        self.captured = 0
        self._t = 0.0

    def now(self) -> float:
        return self._t

    def start(self) -> None:
        self.starts += 1
        if self.starts <= self.fail_starts:
            raise ScannerError("fake camera not connected")

    def capture(self) -> Any:
        index = min(self.captured, len(self.frames) - 1)
        self.captured += 1
        self._t += self.interval_s
        if self.captured >= len(self.frames) and self.stop is not None:
            self.stop.set()
        return self.frames[index]

    def close(self) -> None:
        self.closes += 1


class FakeHealthProbe:
    """Returns ``reading``; tests change it between heartbeats."""

    def __init__(self, reading: HealthReading | None = None) -> None:
        self.reading = reading or HealthReading()

    def read(self) -> HealthReading:
        return self.reading
