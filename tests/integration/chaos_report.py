"""The tally of each fault-injection scenario, printed at the end of the run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tally:
    scenario: str
    size: str
    saved: int
    """Scans the station signalled SAVED (its promise: durable on the station)."""
    stored: int
    """Of those, how many are in the central database."""
    duplicated: int
    """Saved scans stored more than once centrally."""
    lost: int
    """Saved scans missing from the central database."""
    refused: int = 0
    """Scans refused with a signal (nothing stored), e.g. disk full."""
    resent: int = 0
    """Copies the server received again and discarded (counted, acknowledged, not stored)."""
    sent_again: int = 0
    """Records the stations sent again on the same connection because the server seemed to
    have lost them (their resend rule; reconnects, which send everything again, not counted)."""
    unsignalled: int = 0
    """Stored, but the station died between the disk sync and the signal."""


RESULTS: list[Tally] = []
