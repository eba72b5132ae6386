"""Delays between reconnection attempts, and the pace at which a backlog is sent."""

from __future__ import annotations

import random


def jittered_delay(min_s: float, max_s: float, n: int, rng: random.Random) -> float:
    """A random wait between ``min_s`` and ``min(max_s, min_s * 2**n)``.

    Exponential growth with the jitter spread over the whole window (so that stations that
    failed at the same moment do not retry in step), capped at ``max_s``. Used for reconnects
    (``Backoff``) and for resending a record the server has not acknowledged
    (``agent.station``).
    """
    ceiling = min(max_s, min_s * 2.0 ** min(n, 62))
    return rng.uniform(min_s, ceiling)


class Backoff:
    """Exponential backoff with jitter and a cap.

    The n-th consecutive failure waits a random time between ``min_s`` and
    ``min(max_s, min_s * 2**n)`` (jitter spread over the whole window, so that a fleet of stations
    that lost the broker at the same moment does not come back in step). ``reset`` after a
    connection that proved itself (``agent.mqtt``: up long enough, or an acknowledgement).
    """

    def __init__(self, min_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError("need 0 < min_s <= max_s")
        self.min_s, self.max_s = min_s, max_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; counts one more failure."""
        self.failures += 1
        return jittered_delay(self.min_s, self.max_s, self.failures, self._rng)

    def reset(self) -> None:
        self.failures = 0


class TokenBucket:
    """Allows ``rate`` events per second on average, at most ``burst`` at once.

    Time is passed in (monotonic nanoseconds) so that tests drive it with a fake clock.
    """

    def __init__(self, rate: float, burst: float, now_ns: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at = now_ns

    def available(self, now_ns: int) -> int:
        """Whole events allowed now."""
        self._refill(now_ns)
        return max(0, int(self._tokens))

    def take(self, n: int, now_ns: int) -> None:
        """Spend ``n`` events (may go below zero: a burst is paid back before the next one)."""
        self._refill(now_ns)
        self._tokens -= n

    def wait_s(self, now_ns: int) -> float:
        """Seconds until one event is allowed (0 if one is allowed now)."""
        self._refill(now_ns)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def _refill(self, now_ns: int) -> None:
        elapsed = max(0, now_ns - self._at) / 1e9
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._at = now_ns
