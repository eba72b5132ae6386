"""Keyboard-mode (HID) USB barcode scanners, read through evdev."""

from __future__ import annotations

import errno
import fcntl
import glob
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import evdev

from agent.decode import KeyDecoder, KeyEvent, Terminator
from agent.ports import Scan, ScannerState, SourceSink

log = logging.getLogger(__name__)

# _IOW('E', 0xa0, int): which clock stamps this device's events (linux/input.h).
_EVIOCSCLOCKID = 0x400445A0


class InputDevice(Protocol):
    """What the source needs from an opened input device (``evdev.InputDevice`` fits)."""

    path: str
    name: str

    def fileno(self) -> int: ...
    def read(self) -> Iterable[KeyEvent]: ...
    def grab(self) -> None: ...
    def active_keys(self) -> list[int]: ...
    def close(self) -> None: ...


def open_input_device(path: str) -> InputDevice:
    """Open an evdev device, with its events stamped by the monotonic clock where possible.

    Event times measure the gaps between keys; the monotonic clock keeps an NTP step at boot (a
    Raspberry Pi has no real-time clock) from looking like a pause in the middle of a scan.
    """
    device: InputDevice = evdev.InputDevice(path)  # type: ignore[assignment]  # path: str|bytes
    try:
        fcntl.ioctl(device.fileno(), _EVIOCSCLOCKID, struct.pack("i", time.CLOCK_MONOTONIC))
    except OSError as exc:
        log.debug("%s: cannot switch event clock to monotonic: %s", path, exc)
    return device


def find_input_devices(spec: str) -> list[str]:
    """The device nodes ``spec`` names now: a path, or a glob such as ``/dev/input/by-id/*kbd``.

    Among several matches, ``-event-kbd`` nodes win: some scanners expose a second event node
    that never carries the typed codes.
    """
    if not any(c in spec for c in "*?["):
        return [spec] if os.path.exists(spec) else []
    matches = sorted(glob.glob(spec))
    kbd = [m for m in matches if m.endswith("-event-kbd")]
    return kbd or matches


@dataclass
class _Opened:
    spec: str
    path: str
    key: str
    device: InputDevice
    decoder: KeyDecoder
    offset_s: float = 0.0  # event clock minus our monotonic clock, from the last read


class EvdevScanSource:
    """Keyboard-mode scanners: every device named by ``devices`` (paths or glob patterns).

    Needs read access to ``/dev/input/event*`` (group ``input``). Grabs each device
    (``EVIOCGRAB``) so codes never reach a console or login prompt. Each device has its own
    ``KeyDecoder`` (US layout), so several scanners can type at once. An unplugged scanner
    (``ENODEV``, or its node gone) is closed, a scan it was typing is rejected, and the source
    reports ``ScannerState(present=False)`` and looks for it again every ``poll_s`` seconds.

    The source reports one presence for all its devices: missing while any entry of ``devices``
    matches no open scanner (the station keeps a single "scanner missing" condition).

    Args:
        devices: device paths or glob patterns (``/dev/input/by-id/usb-*-event-kbd``).
        name: the source's name in ``ScannerState``.
        terminator, gap_ms, incomplete_ms, max_length: see ``KeyDecoder``.
        grab: take each device exclusively.
        poll_s: how often to look for scanners that are missing.
        open_device: opens a device node (default: ``evdev.InputDevice``).
        find_devices: lists the nodes a spec names now (default: glob on the filesystem).
        monotonic: the clock for waits (seconds).
    """

    def __init__(
        self,
        devices: Sequence[str],
        *,
        name: str = "evdev",
        terminator: Terminator = "enter",
        gap_ms: float = 100.0,
        incomplete_ms: float = 1000.0,
        max_length: int = 512,
        grab: bool = True,
        poll_s: float = 0.5,
        open_device: Callable[[str], InputDevice] = open_input_device,
        find_devices: Callable[[str], list[str]] = find_input_devices,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not devices:
            raise ValueError("at least one device path or pattern is needed")
        self.devices = list(devices)
        self.name = name
        self.terminator: Terminator = terminator
        self.gap_ms = gap_ms
        self.incomplete_ms = incomplete_ms
        self.max_length = max_length
        self.grab = grab
        self.poll_s = poll_s
        self._open_device = open_device
        self._find_devices = find_devices
        self._monotonic = monotonic

    def run(self, sink: SourceSink, stop: threading.Event) -> None:
        try:
            _Loop(self, sink).run(stop)
        except Exception as exc:
            # A bug, not a scanner fault: staff must see that scans no longer arrive.
            sink(ScannerState(source=self.name, present=False, detail=f"source failed: {exc!r}"))
            raise


class _Loop:
    """The state of one ``EvdevScanSource.run``."""

    def __init__(self, source: EvdevScanSource, sink: SourceSink) -> None:
        self.src = source
        self.sink = sink
        self.opened: dict[str, _Opened] = {}
        self.present: bool | None = None
        self.next_poll = 0.0
        self.problems: dict[str, str] = {}

    def run(self, stop: threading.Event) -> None:
        clock = self.src._monotonic
        try:
            while not stop.is_set():
                now = clock()
                if now >= self.next_poll:
                    self.discover()
                    self.next_poll = now + self.src.poll_s
                timeout = self.next_poll - now
                for entry in self.opened.values():
                    deadline = entry.decoder.deadline()
                    if deadline is not None:
                        timeout = min(timeout, deadline - entry.offset_s - now)
                timeout = max(timeout, 0.0)
                if not self.opened:
                    stop.wait(timeout)
                    continue
                fds = {entry.device.fileno(): entry for entry in self.opened.values()}
                readable, _, _ = select.select(list(fds), [], [], timeout)
                for fd in readable:
                    self.read(fds[fd])
                now = clock()
                for entry in list(self.opened.values()):
                    self.emit(entry.decoder.flush(now + entry.offset_s))
        finally:
            for entry in list(self.opened.values()):
                _close(entry.device)
            self.opened.clear()

    def emit(self, scan: Scan | None) -> None:
        if scan is not None:
            self.sink(scan)

    def discover(self) -> None:
        src = self.src
        found_keys: set[str] = set()
        missing: list[str] = []
        for spec in src.devices:
            try:
                paths = src._find_devices(spec)
            except OSError as exc:
                self.problems[spec] = f"cannot list: {exc.strerror or exc}"
                paths = []
            satisfied = False
            for path in paths:
                key = os.path.realpath(path)
                found_keys.add(key)
                if key in self.opened or self.open(spec, path, key):
                    satisfied = True
            if not satisfied:
                missing.append(spec)
        for entry in list(self.opened.values()):
            if entry.key not in found_keys:
                self.lose(entry, "device node vanished")
        present = not missing
        if present == self.present:
            return
        self.present = present
        if present:
            detail = ", ".join(sorted(e.path for e in self.opened.values()))
            log.info("scanner present: %s", detail)
        else:
            detail = "; ".join(f"{s}: {self.problems.get(s, 'not connected')}" for s in missing)
            log.warning("scanner missing: %s", detail)
        self.sink(ScannerState(source=src.name, present=present, detail=detail))

    def open(self, spec: str, path: str, key: str) -> bool:
        src = self.src
        try:
            device = src._open_device(path)
        except OSError as exc:
            self.problems[spec] = f"{path}: {exc.strerror or exc}"
            return False
        if src.grab:
            try:
                device.grab()
            except OSError as exc:
                _close(device)
                why = "taken by another program" if exc.errno == errno.EBUSY else exc.strerror
                self.problems[spec] = f"{path}: cannot grab: {why or exc}"
                return False
        decoder = KeyDecoder(
            source=path,
            terminator=src.terminator,
            gap_ms=src.gap_ms,
            incomplete_ms=src.incomplete_ms,
            max_length=src.max_length,
        )
        self.opened[key] = _Opened(spec=spec, path=path, key=key, device=device, decoder=decoder)
        self.problems.pop(spec, None)
        log.info("scanner %s opened (%s)", path, getattr(device, "name", "?"))
        return True

    def read(self, entry: _Opened) -> None:
        try:
            events = list(entry.device.read())
        except BlockingIOError:
            return
        except OSError as exc:
            # Unplugging makes select() report the device readable and read() fail with ENODEV.
            self.lose(entry, exc.strerror or str(exc))
            return
        if not events:
            return
        read_at = self.src._monotonic()
        decoder = entry.decoder
        for event in events:
            self.emit(decoder.feed(event))
            if decoder.needs_resync:
                try:
                    held = entry.device.active_keys()
                except OSError:
                    held = []
                decoder.resync(held)
        last = events[-1]
        entry.offset_s = last.sec + last.usec / 1e6 - read_at

    def lose(self, entry: _Opened, reason: str) -> None:
        log.warning("scanner %s lost: %s", entry.path, reason)
        self.emit(entry.decoder.abort(f"scanner disconnected mid-scan ({reason})"))
        self.opened.pop(entry.key, None)
        _close(entry.device)
        self.problems[entry.spec] = f"{entry.path}: {reason}"
        self.next_poll = 0.0  # look again now: report it missing, or reopen a quick replug


def _close(device: InputDevice) -> None:
    try:
        device.close()
    except OSError as exc:
        log.debug("closing %s: %s", getattr(device, "path", "?"), exc)
