"""Scan sources that need no hardware library."""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path
from typing import TextIO

from agent.ports import Scan, ScannerState, SourceSink


class LineScanSource:
    """One code per line from standard input (``path="-"``) or a named pipe.

    For development, testing and scripted demos. Empty lines are ignored. A named pipe is reopened
    when its writer goes away, so codes can be fed in several sessions; standard input ends the
    source at end of file (the station keeps running to deliver what it saved). A pipe that
    cannot be opened (removed meanwhile) is reported as a missing scanner and tried again every
    ``retry_s`` until it is back. ``swabline agent`` checks at start that the pipe exists.
    """

    def __init__(self, path: str = "-", *, name: str | None = None, retry_s: float = 1.0) -> None:
        self.path = path
        self.name = name or ("stdin" if path == "-" else path)
        self._retry_s = retry_s

    def run(self, sink: SourceSink, stop: threading.Event) -> None:
        if self.path == "-":
            self._pump(sys.stdin, sink, stop)
            return
        missing = False
        while not stop.is_set():
            try:
                is_fifo = stat.S_ISFIFO(os.stat(self.path).st_mode)
                # open() blocks until a writer comes; source threads are daemons, so a stop
                # while blocked here does not hold the agent up.
                stream = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError as exc:
                if not missing:
                    missing = True
                    sink(ScannerState(self.name, False, f"cannot open {self.path}: {exc.strerror}"))
                stop.wait(self._retry_s)
                continue
            if missing:
                missing = False
                sink(ScannerState(self.name, True))
            with stream:
                self._pump(stream, sink, stop)
            if not is_fifo:
                return

    def _pump(self, stream: TextIO, sink: SourceSink, stop: threading.Event) -> None:
        for line in stream:
            if stop.is_set():
                return
            text = line.rstrip("\r\n")
            if text:
                sink(Scan(text=text, source=self.name))


def make_fifo(path: Path) -> None:
    """Create a named pipe for a ``LineScanSource`` if it does not exist."""
    if not path.exists():
        os.mkfifo(path)
