"""Reconnection delays and the pace of a backlog."""

from __future__ import annotations

import random

import pytest

from agent.backoff import Backoff, TokenBucket


def test_reconnect_delays_grow_jittered_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(1.0, 30.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(30.0, 2.0 ** (n + 1)) for n in range(12)]
    assert all(1.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays) <= 30.0
    assert max(delays[6:]) > 8.0  # it does grow
    backoff.reset()
    assert backoff.next_delay() <= 2.0


def test_stations_that_fail_together_do_not_retry_together() -> None:
    fleet = [Backoff(1.0, 60.0, rng=random.Random(seed)) for seed in range(200)]
    for b in fleet:
        for _ in range(4):
            b.next_delay()
    fifth = sorted(b.next_delay() for b in fleet)
    # Spread over the window (1 s .. 32 s), not bunched: no second holds a tenth of the fleet.
    per_second = [sum(1 for d in fifth if s <= d < s + 1) for s in range(1, 32)]
    assert max(per_second) < 20
    assert fifth[0] < 5 and fifth[-1] > 25


def test_backoff_needs_a_sane_window() -> None:
    with pytest.raises(ValueError):
        Backoff(10, 1)


def test_the_bucket_allows_the_rate_with_a_bounded_burst() -> None:
    s = 1_000_000_000
    bucket = TokenBucket(rate=100, burst=10, now_ns=0)
    assert bucket.available(0) == 10
    bucket.take(10, 0)
    assert bucket.available(0) == 0
    assert bucket.wait_s(0) == pytest.approx(0.01)
    assert bucket.available(s // 20) == 5
    assert bucket.available(60 * s) == 10  # idle time does not pile up a big burst
    bucket.take(15, 60 * s)  # fresh scans may overdraw; the backlog then waits
    assert bucket.available(60 * s + s // 20) == 0
    assert bucket.available(60 * s + s // 10) == 5
