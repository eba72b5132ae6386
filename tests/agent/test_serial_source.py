"""USB serial (CDC) scanners: line decoding, and the source on pyserial's loop:// port."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import serial

from agent.hw.serial_source import LineDecoder, SerialPort, SerialScanSource, open_serial_port
from agent.ports import Scan, ScannerState, SourceEvent

CCCD = (
    "079303001234|025123456|Nguyễn Thị Bình|15082003|Nữ|"
    "12 Lê Lợi, P. Bến Nghé, Q.1, TP. Hồ Chí Minh|20042021"
)


PORT = "/dev/serial/by-id/usb-Scanner-if00"
Starter = Callable[[], "queue.Queue[SourceEvent]"]


def texts(scans: list[Scan]) -> list[tuple[str, str | None]]:
    return [(s.text, s.rejected) for s in scans]


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
def test_cr_lf_and_crlf_end_a_line(end: bytes) -> None:
    decoder = LineDecoder(source="tty")
    scans = decoder.feed(b"KG-RG-000123" + end + CCCD.encode() + end)
    assert texts(scans) == [("KG-RG-000123", None), (CCCD, None)]
    assert all(not s.lossy for s in scans)
    assert not decoder.pending


def test_lines_split_across_reads_and_utf8_split_inside_a_character() -> None:
    decoder = LineDecoder(source="tty")
    data = ("Trần Văn Hùng\r\n" + "02422288\n").encode()
    scans: list[Scan] = []
    for i in range(len(data)):  # one byte per read: "ầ" arrives in three pieces
        scans += decoder.feed(data[i : i + 1])
    assert texts(scans) == [("Trần Văn Hùng", None), ("02422288", None)]


def test_invalid_utf8_is_rejected_with_a_reason() -> None:
    decoder = LineDecoder(source="tty")
    (scan,) = decoder.feed("Hùng".encode("cp1258") + b"\r")
    assert scan.rejected is not None and scan.rejected.startswith("invalid UTF-8 at byte 1")


def test_too_long_is_rejected_and_the_next_line_is_fine() -> None:
    decoder = LineDecoder(source="tty", max_length=10)
    scans = decoder.feed(b"X" * 100 + b"\r\nshort\r\n" + "ễ".encode() * 10 + b"\r")
    assert scans[0].rejected == "longer than max_length (10 characters)"
    assert texts(scans[1:]) == [("short", None), ("ễ" * 10, None)]


def test_abort_rejects_a_line_without_terminator() -> None:
    decoder = LineDecoder(source="tty")
    assert decoder.feed(b"KG-RG-") == []
    scan = decoder.abort("scanner disconnected mid-scan")
    assert scan is not None and (scan.text, scan.rejected) == (
        "KG-RG-",
        "scanner disconnected mid-scan",
    )
    assert decoder.abort("x") is None


class Plug:
    """A serial scanner that can be unplugged: real loop:// ports, failing as a vanished tty."""

    def __init__(self) -> None:
        self.connected = False
        self.port: serial.SerialBase | None = None
        self.opened = threading.Event()
        self.opens = 0

    def open(self, url: str, baudrate: int, timeout_s: float) -> SerialPort:
        if not self.connected:
            raise serial.SerialException(f"could not open port {url}: No such file or directory")
        self.opens += 1
        self.port = open_serial_port("loop://", baudrate, timeout_s)  # type: ignore[assignment]
        self.opened.set()
        return self  # type: ignore[return-value]

    # The SerialPort protocol, failing once unplugged.
    @property
    def in_waiting(self) -> int:
        self._check()
        assert self.port is not None
        return int(self.port.in_waiting)

    def read(self, size: int = 1) -> bytes:
        self._check()
        assert self.port is not None
        return bytes(self.port.read(size))

    def close(self) -> None:
        if self.port is not None:
            self.port.close()

    def _check(self) -> None:
        if not self.connected:
            raise serial.SerialException(
                "device reports readiness to read but returned no data "
                "(device disconnected or multiple access on port?)"
            )

    def type(self, data: bytes) -> None:
        assert self.port is not None
        self.port.write(data)

    def wait_read(self, timeout_s: float = 10.0) -> bool:
        """Wait until the source has read everything typed (before pulling the cable)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.port is not None
            if self.port.in_waiting == 0:
                return True
            time.sleep(0.005)
        return False


@pytest.fixture
def plug() -> Plug:
    return Plug()


@pytest.fixture
def start(plug: Plug) -> Iterator[Callable[[], queue.Queue[SourceEvent]]]:
    events: queue.Queue[SourceEvent] = queue.Queue()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def go() -> queue.Queue[SourceEvent]:
        source = SerialScanSource(PORT, open_port=plug.open, retry_s=0.02, incomplete_ms=300)
        thread = threading.Thread(target=source.run, args=(events.put, stop))
        thread.start()
        threads.append(thread)
        return events

    yield go
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()
    plug.close()


def take(events: queue.Queue[SourceEvent]) -> SourceEvent:
    return events.get(timeout=10)


def test_reads_utf8_lines_from_the_port(plug: Plug, start: Starter) -> None:
    plug.connected = True
    running = start()
    assert take(running) == ScannerState(source=PORT, present=True, detail=PORT)
    plug.type(CCCD.encode() + b"\r\n" + b"KG-RG-000123\r")
    first, second = take(running), take(running)
    assert isinstance(first, Scan) and first.text == CCCD and first.rejected is None
    assert isinstance(second, Scan) and second.text == "KG-RG-000123"


def test_missing_unplugged_and_back(plug: Plug, start: Starter) -> None:
    running = start()
    missing = take(running)
    assert isinstance(missing, ScannerState) and not missing.present
    assert "No such file" in missing.detail
    plug.connected = True
    assert take(running) == ScannerState(source=PORT, present=True, detail=PORT)
    plug.type("Nguyễn".encode())  # no CR/LF yet
    assert plug.wait_read()  # the source has the bytes before the cable is pulled
    plug.connected = False
    cut = take(running)
    assert isinstance(cut, Scan) and cut.rejected == "scanner disconnected mid-scan"
    lost = take(running)
    assert isinstance(lost, ScannerState) and not lost.present
    plug.connected = True
    back = take(running)
    assert isinstance(back, ScannerState) and back.present
    plug.type(b"AGAIN\n")
    again = take(running)
    assert isinstance(again, Scan) and again.text == "AGAIN"
    assert plug.opens == 2


def test_line_without_terminator_times_out(plug: Plug, start: Starter) -> None:
    plug.connected = True
    running = start()
    assert isinstance(take(running), ScannerState)
    plug.type(b"NO-SUFFIX")
    scan = take(running)
    assert isinstance(scan, Scan)
    assert (scan.text, scan.rejected) == ("NO-SUFFIX", "incomplete: no CR/LF within 300 ms")
