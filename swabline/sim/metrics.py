"""Counters and latency samples of a simulation run, and the percentile helper benches share."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linear between ranks.

    Same definition as numpy's default (``method="linear"``). NaN for no values.
    """
    if not sorted_values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` of unsorted ``values``."""
    ordered = sorted(values)
    return {f"p{q:g}": percentile(ordered, q) for q in qs}


@dataclass
class FleetMetrics:
    """What every simulated station did, counted on the simulator's side.

    ``created``: records the stations stored (each one published at least once).
    ``acknowledged``: records an ``Ack`` confirmed (each counted once).
    ``repeat_acks``: acknowledgements of a record already confirmed: the server saw a resend
    (a duplicate delivery), deduplicated it and acknowledged it again.
    ``latencies_s``: scan (record stored on the station) to its first acknowledgement.
    """

    created: int = 0
    acknowledged: int = 0
    repeat_acks: int = 0
    publishes: int = 0
    connects: int = 0
    connected_now: int = 0
    drops: int = 0
    latencies_s: array[float] = field(default_factory=lambda: array("d"))
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.created - self.acknowledged

    def recent_p99_s(self, last: int = 5000) -> float:
        tail = self.latencies_s[-last:]
        return percentile(sorted(tail), 99)
