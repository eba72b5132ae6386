"""Scan sources that need no hardware library."""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path
from typing import TextIO

from agent.ports import Scan, SourceSink


class LineScanSource:
    """One code per line from standard input (``path="-"``) or a named pipe.

    For development, testing and scripted demos. Empty lines are ignored. A named pipe is reopened
    when its writer goes away, so codes can be fed in several sessions; standard input ends the
    source at end of file (the station keeps running to deliver what it saved).
    """

    def __init__(self, path: str = "-", *, name: str | None = None) -> None:
        self.path = path
        self.name = name or ("stdin" if path == "-" else path)

    def run(self, sink: SourceSink, stop: threading.Event) -> None:
        if self.path == "-":
            self._pump(sys.stdin, sink, stop)
            return
        while not stop.is_set():
            is_fifo = stat.S_ISFIFO(os.stat(self.path).st_mode)
            # open() blocks until a writer comes; source threads are daemons, so a stop
            # while blocked here does not hold the agent up.
            with open(self.path, encoding="utf-8", errors="replace") as f:
                self._pump(f, sink, stop)
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
