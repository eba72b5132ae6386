"""The real clock of a station (Linux)."""

from __future__ import annotations

import ctypes
import ctypes.util
import time

_TIME_ERROR = 5  # adjtimex() state when the kernel's STA_UNSYNC flag is set (man 2 adjtimex)


class SystemClock:
    """Wall clock, boot-time monotonic clock, and NTP synchronisation from ``adjtimex(2)``.

    A Raspberry Pi has no real-time clock: until NTP syncs the wall clock may be far off, so
    every record also carries the monotonic time and whether the clock was synchronised.
    """

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True) if name else None

    def wall(self) -> float:
        return time.time()

    def monotonic_ns(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def synchronized(self) -> bool:
        if self._libc is None:
            return False
        buf = ctypes.create_string_buffer(512)  # struct timex with modes = 0: read only
        state = int(self._libc.adjtimex(buf))
        return state not in (-1, _TIME_ERROR)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
