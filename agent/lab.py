"""The lab reception workflow: a station at a lab scans transport boxes and the tubes in them.

A station runs it instead of the sampling workflow when its configuration has a ``[lab]``
section. Pure, like every workflow: decides what a scan means and never does I/O.

- A box label (matching ``lab.box_patterns``) opens that box: the tubes scanned next are in it.
  Scanning the same label again closes it; another label switches to that box.
- A tube (matching ``lab.tube_patterns``) becomes one ``tube_received`` record, with the open box
  if any. The same tube twice in one box is refused as a duplicate (nothing stored).
- Anything else is refused (a ``scan_rejected`` record with the reason, never the code).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from agent.ports import Decision, Entry, Scan, Signal
from protocol import Record
from protocol.events import ScanRejected, TubeReceived

MAX_CODE = 64


class LabReception:
    """``Workflow`` of a lab station.

    Args:
        tube_patterns: regular expressions a whole tube barcode matches.
        box_patterns: regular expressions a whole transport-box label matches (checked first).
    """

    def __init__(self, *, tube_patterns: Sequence[str], box_patterns: Sequence[str]) -> None:
        self._tubes = [re.compile(p) for p in tube_patterns]
        self._boxes = [re.compile(p) for p in box_patterns]
        self.box: str | None = None
        self._in_box: set[str] = set()

    def decide(self, scan: Scan) -> Decision:
        if scan.rejected:
            return self._reject("unreadable scan", Signal.REJECTED)
        code = scan.text.strip()
        if 0 < len(code) <= MAX_CODE and any(p.fullmatch(code) for p in self._boxes):
            if code == self.box:
                self.box, self._in_box = None, set()
                return Decision(entries=(), signal=Signal.POOL_CLOSED)
            self.box, self._in_box = code, set()
            return Decision(entries=(), signal=Signal.POOL_OPENED)
        if 0 < len(code) <= MAX_CODE and any(p.fullmatch(code) for p in self._tubes):
            if code in self._in_box:
                return Decision(entries=(), signal=Signal.DUPLICATE)
            if self.box is not None:
                self._in_box.add(code)
            data = TubeReceived(tube=code, batch=self.box)
            return Decision(
                entries=(
                    Entry(
                        kind="tube_received",
                        code=code,
                        data=data.model_dump(exclude_none=True),
                    ),
                ),
                signal=Signal.SAVED,
            )
        return self._reject("not a tube or box label", Signal.REJECTED)

    def _reject(self, reason: str, signal: Signal) -> Decision:
        data = ScanRejected(reason=reason, signal=signal.value)
        return Decision(
            entries=(Entry(kind="scan_rejected", data=data.model_dump()),), signal=signal
        )

    def restore(self, records: Iterable[Record]) -> None:
        """Reopen the box of the last unacknowledged tube, with the tubes already in it."""
        for record in records:
            if record.kind != "tube_received":
                continue
            data = TubeReceived.model_validate(record.data)
            if data.batch != self.box:
                self.box, self._in_box = data.batch, set()
            if data.batch is not None:
                self._in_box.add(data.tube)

    def stored(self, records: Sequence[Record]) -> None:
        pass  # ``decide`` already moved the box: opening a box stores no record of its own

    def retain(self, records: Iterable[Record]) -> list[Record]:
        """The tubes of the open box, so a restart after they were acknowledged reopens it."""
        if self.box is None:
            return []
        return [r for r in records if r.kind == "tube_received" and r.data.get("batch") == self.box]
