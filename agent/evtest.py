"""Replaying ``evtest`` captures, so a misbehaving scanner recorded in the field can be reproduced
anywhere.

A technician records with ``sudo evtest --grab /dev/input/by-id/...-event-kbd > capture.txt``
(scan a few codes, then Ctrl-C); ``swabline scanner replay capture.txt`` then shows what the
station's decoder makes of it. Lines look like::

    Event: time 1700000000.123456, type 1 (EV_KEY), code 30 (KEY_A), value 1
    Event: time 1700000000.123456, -------------- SYN_REPORT ------------
    Event: time 1700000000.123456, >>>>>>>>>>>>>> SYN_DROPPED <<<<<<<<<<<<

The header evtest prints first (device name, supported events) is skipped.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.decode import EV_SYN, KeyDecoder, RawEvent, Terminator
from agent.errors import CaptureFormatError
from agent.ports import Scan, SourceSink

_EVENT = re.compile(r"Event: time (\d+)\.(\d{1,6}), (.*)")
_TYPED = re.compile(r"type (\d+) \([^)]*\), code (\d+) \([^)]*\), value (-?[0-9a-fA-F]+)")
# evtest prints SYN events as "---- SYN_REPORT ----", "++++ SYN_MT_REPORT ++++" and
# ">>>> SYN_DROPPED <<<<"; the dashed form is accepted for every code (hand-edited captures).
_SYN = re.compile(r"[-+>]+ (SYN_[A-Z_]+|\?) [-+<]+")
_SYN_CODES = {"SYN_REPORT": 0, "SYN_CONFIG": 1, "SYN_MT_REPORT": 2, "SYN_DROPPED": 3}
_EV_MSC, _MSC_RAW, _MSC_SCAN = 4, 3, 4  # evtest prints these values in hex


def parse_evtest(lines: Iterable[str]) -> Iterator[RawEvent]:
    """The events in ``evtest`` output; raises ``CaptureFormatError`` naming a bad line."""
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line.startswith("Event:"):
            continue
        m = _EVENT.fullmatch(line)
        if m is None:
            raise CaptureFormatError(f"line {number}: not an evtest event line: {line[:80]!r}")
        sec, usec = int(m[1]), int(m[2].ljust(6, "0"))
        rest = m[3]
        typed = _TYPED.fullmatch(rest)
        if typed is not None:
            etype, code = int(typed[1]), int(typed[2])
            base = 16 if etype == _EV_MSC and code in (_MSC_RAW, _MSC_SCAN) else 10
            try:
                value = int(typed[3], base)
            except ValueError:
                raise CaptureFormatError(f"line {number}: bad value {typed[3]!r}") from None
            yield RawEvent(sec, usec, etype, code, value)
            continue
        syn = _SYN.fullmatch(rest)
        if syn is None or syn[1] not in _SYN_CODES:
            raise CaptureFormatError(f"line {number}: unknown event {rest[:80]!r}")
        yield RawEvent(sec, usec, EV_SYN, _SYN_CODES[syn[1]], 0)


def decode_events(events: Iterable[RawEvent], decoder: KeyDecoder) -> Iterator[Scan]:
    """Every scan in ``events``, including one left pending at the end of the capture."""
    for event in events:
        scan = decoder.feed(event)
        if scan is not None:
            yield scan
    last = decoder.deadline()
    if last is not None:
        scan = decoder.flush(last)
        if scan is not None:
            yield scan


class EvtestReplaySource:
    """Scans from an ``evtest`` capture file, decoded as the station decodes a live scanner.

    The whole file is decoded at once (the timing that matters, the gaps between keys, is in the
    events' own timestamps); the source ends at the end of the file.
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str | None = None,
        terminator: Terminator = "enter",
        gap_ms: float = 100.0,
        incomplete_ms: float = 1000.0,
        max_length: int = 512,
    ) -> None:
        self.path = Path(path)
        self.name = name or f"replay:{self.path.name}"
        self.terminator: Terminator = terminator
        self.gap_ms = gap_ms
        self.incomplete_ms = incomplete_ms
        self.max_length = max_length

    def decoder(self) -> KeyDecoder:
        """A fresh decoder with this source's settings."""
        return KeyDecoder(
            source=self.name,
            terminator=self.terminator,
            gap_ms=self.gap_ms,
            incomplete_ms=self.incomplete_ms,
            max_length=self.max_length,
        )

    def scans(self) -> Iterator[Scan]:
        """Every scan in the capture, in order."""
        with self.path.open(encoding="utf-8", errors="replace") as f:
            yield from decode_events(parse_evtest(f), self.decoder())

    def run(self, sink: SourceSink, stop: threading.Event) -> None:
        for scan in self.scans():
            if stop.is_set():
                return
            sink(scan)
