"""The development scanner: codes from a named pipe, fed in several sessions."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ports import Scan, ScannerState, SourceEvent
from agent.sources import LineScanSource, make_fifo


class Running:
    """A ``LineScanSource`` on its own thread, its events in a queue."""

    def __init__(self, source: LineScanSource) -> None:
        self.events: queue.Queue[SourceEvent] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=source.run, args=(self.events.put, self.stop))
        self.thread.start()

    def next(self) -> SourceEvent:
        return self.events.get(timeout=10)

    def end(self, pipe: Path) -> None:
        """Stop the source, waking it if it waits in open() for a writer."""
        self.stop.set()
        while self.thread.is_alive():
            # A writer that never blocks: ENXIO while no reader has the pipe open.
            with contextlib.suppress(OSError):
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
            self.thread.join(timeout=0.05)

    def texts(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            event = self.next()
            assert isinstance(event, Scan), event
            assert event.rejected is None
            out.append(event.text)
        return out


def write(pipe: Path, text: str) -> None:
    """One writer session: open, write, close (the reader sees end of file)."""
    with pipe.open("w", encoding="utf-8") as f:
        f.write(text)


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "scans.fifo"
    make_fifo(path)
    make_fifo(path)  # a second call keeps the pipe that is there
    yield path


def test_codes_from_several_writers_in_turn_all_arrive_in_order(pipe: Path) -> None:
    running = Running(LineScanSource(str(pipe)))
    write(pipe, "KG-RG-000001\n\nKG-RG-000002\r\n")
    assert running.texts(2) == ["KG-RG-000001", "KG-RG-000002"]  # empty lines ignored
    write(pipe, "Nguyễn Văn An\n")  # the pipe is reopened for the next writer
    write(pipe, "KG-RG-000003\n")
    assert running.texts(2) == ["Nguyễn Văn An", "KG-RG-000003"]
    running.end(pipe)
    assert running.events.empty()


def test_a_pipe_that_is_not_there_is_a_missing_scanner_until_it_is_back(tmp_path: Path) -> None:
    pipe = tmp_path / "scans.fifo"  # removed after the agent started, say
    running = Running(LineScanSource(str(pipe), retry_s=0.05))
    assert running.next() == ScannerState(
        str(pipe), False, f"cannot open {pipe}: No such file or directory"
    )
    make_fifo(pipe)
    write(pipe, "A-2\n")
    assert running.next() == ScannerState(str(pipe), True)
    assert running.texts(1) == ["A-2"]
    running.end(pipe)
    assert running.events.empty()  # reported missing once, not once per retry


def test_a_plain_file_is_read_once(tmp_path: Path) -> None:
    codes = tmp_path / "codes.txt"
    codes.write_text("A-1\nA-2\n")
    running = Running(LineScanSource(str(codes)))
    assert running.texts(2) == ["A-1", "A-2"]
    running.thread.join(timeout=10)
    assert not running.thread.is_alive()
