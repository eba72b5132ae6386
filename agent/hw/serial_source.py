"""USB serial (CDC, "virtual COM") barcode scanners, read through pyserial.

In CDC mode a scanner sends the code's raw bytes followed by CR and/or LF, so UTF-8 text (the
Vietnamese names in a CCCD QR code) survives, unlike keyboard mode.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import serial

from agent.ports import Scan, ScannerState, SourceSink

log = logging.getLogger(__name__)


class SerialPort(Protocol):
    """What the source needs from an open port (``serial.Serial`` fits)."""

    @property
    def in_waiting(self) -> int: ...
    def read(self, size: int = 1) -> bytes: ...
    def close(self) -> None: ...


def open_serial_port(port: str, baudrate: int, timeout_s: float) -> SerialPort:
    """Open ``port``: a device path, a glob such as ``/dev/serial/by-id/usb-*``, or a pyserial
    URL (``loop://`` in tests). Raises ``OSError`` (``SerialException``) when it is not there.
    """
    if any(c in port for c in "*?[") and "://" not in port:
        matches = sorted(glob.glob(port))
        if not matches:
            raise FileNotFoundError(2, "no device matches", port)
        port = matches[0]
    # exclusive: a second station process (or a stray terminal program) must not share the port.
    exclusive = None if "://" in port else True
    opened: SerialPort = serial.serial_for_url(
        port, baudrate=baudrate, timeout=timeout_s, exclusive=exclusive
    )
    return opened


class LineDecoder:
    """Bytes from a serial scanner -> scans, one per line (pure).

    CR, LF and CRLF all end a line; empty lines are ignored. A line that is not valid UTF-8, or
    longer than ``max_length`` characters, is rejected with the reason.
    """

    def __init__(self, *, source: str, max_length: int = 1024) -> None:
        self.source = source
        self.max_length = max_length
        self._buf = bytearray()
        self._overflow = False
        # UTF-8 takes at most 4 bytes a character: past this the line is too long whatever it is.
        self._max_bytes = 4 * max_length

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._overflow

    def feed(self, data: bytes) -> list[Scan]:
        """Take bytes as they arrive; returns the scans they complete."""
        scans: list[Scan] = []
        start = 0
        for i, byte in enumerate(data):
            if byte in (0x0D, 0x0A):
                self._append(data[start:i])
                start = i + 1
                if self.pending:
                    scans.append(self._finish())
        self._append(data[start:])
        return scans

    def abort(self, reason: str) -> Scan | None:
        """Reject a line left without its terminator (scanner unplugged, or no CR/LF suffix)."""
        if not self.pending:
            return None
        return self._finish(reason)

    def _append(self, chunk: bytes) -> None:
        if self._overflow or not chunk:
            return
        self._buf += chunk
        if len(self._buf) > self._max_bytes:
            del self._buf[self._max_bytes :]
            self._overflow = True

    def _finish(self, reason: str | None = None) -> Scan:
        raw = bytes(self._buf)
        too_long = self._overflow
        self._buf.clear()
        self._overflow = False
        if too_long:
            text = raw.decode("utf-8", errors="replace")
            reason = reason or f"longer than max_length ({self.max_length} characters)"
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = raw.decode("utf-8", errors="replace")
                bad = raw[exc.start : exc.start + 4]
                reason = reason or f"invalid UTF-8 at byte {exc.start}: {bad!r}"
            if len(text) > self.max_length:
                reason = reason or f"longer than max_length ({self.max_length} characters)"
        return Scan(text=text, source=self.source, rejected=reason)


class SerialScanSource:
    """A scanner in USB serial (CDC) mode: ``/dev/ttyACM*``, ``/dev/serial/by-id/...``.

    Needs read access to the tty (group ``dialout``). Lines are UTF-8 ending in CR, LF or CRLF.
    When the port cannot be opened or fails (unplugged), the source reports
    ``ScannerState(present=False)`` and tries to open it again every ``retry_s`` seconds.

    Args:
        port: device path, glob pattern or pyserial URL.
        baudrate: ignored by CDC devices, used by real UARTs.
        max_length: longest accepted code, in characters.
        incomplete_ms: a line left without CR/LF for this long is rejected as incomplete.
        retry_s: how often to try to reopen a missing port.
        name: the source's name (default: ``port``).
        open_port: opens the port (default: ``serial.serial_for_url``).
        monotonic: the clock for the incomplete-line timeout (seconds).
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        max_length: int = 1024,
        incomplete_ms: float = 1000.0,
        retry_s: float = 0.5,
        name: str | None = None,
        open_port: Callable[[str, int, float], SerialPort] = open_serial_port,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.max_length = max_length
        self.incomplete_s = incomplete_ms / 1000.0
        self.retry_s = retry_s
        self.name = name or port
        self._open_port = open_port
        self._monotonic = monotonic
        self._read_timeout_s = min(0.2, retry_s)

    def run(self, sink: SourceSink, stop: threading.Event) -> None:
        try:
            self._run(sink, stop)
        except Exception as exc:
            # A bug, not a scanner fault: staff must see that scans no longer arrive.
            sink(ScannerState(source=self.name, present=False, detail=f"source failed: {exc!r}"))
            raise

    def _run(self, sink: SourceSink, stop: threading.Event) -> None:
        present: bool | None = None
        while not stop.is_set():
            try:
                port = self._open_port(self.port, self.baudrate, self._read_timeout_s)
            except (OSError, ValueError) as exc:  # SerialException is an OSError
                if present is not False:
                    present = False
                    log.warning("serial scanner %s missing: %s", self.port, exc)
                    sink(ScannerState(source=self.name, present=False, detail=str(exc)))
                stop.wait(self.retry_s)
                continue
            present = True
            log.info("serial scanner %s opened", self.port)
            sink(ScannerState(source=self.name, present=True, detail=self.port))
            try:
                self._pump(port, sink, stop)
            except OSError as exc:
                present = False
                log.warning("serial scanner %s lost: %s", self.port, exc)
                sink(ScannerState(source=self.name, present=False, detail=str(exc)))
            finally:
                try:
                    port.close()
                except OSError as exc:
                    log.debug("closing %s: %s", self.port, exc)

    def _pump(self, port: SerialPort, sink: SourceSink, stop: threading.Event) -> None:
        decoder = LineDecoder(source=self.name, max_length=self.max_length)
        last = self._monotonic()
        try:
            while not stop.is_set():
                # read() waits up to the port's timeout for the first byte, then takes what came.
                data = port.read(max(1, port.in_waiting))
                now = self._monotonic()
                if data:
                    last = now
                    for scan in decoder.feed(data):
                        sink(scan)
                elif decoder.pending and now - last >= self.incomplete_s:
                    reason = f"incomplete: no CR/LF within {self.incomplete_s * 1000:g} ms"
                    incomplete = decoder.abort(reason)
                    if incomplete is not None:
                        sink(incomplete)
        except OSError:
            cut = decoder.abort("scanner disconnected mid-scan")
            if cut is not None:
                sink(cut)
            raise
