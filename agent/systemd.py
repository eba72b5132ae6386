"""Readiness, watchdog and status for systemd (``sd_notify``), fed from the station loop."""

from __future__ import annotations

import time
from collections.abc import Callable

import sdnotify


class SystemdNotifier:
    """Tells systemd the agent is up (``READY=1``) and alive (``WATCHDOG=1``), with a ``STATUS=``.

    Pass it as the station's ``on_tick`` hook: it is called from the station's own loop, so a loop
    that hangs stops feeding the watchdog and systemd restarts the agent (``WatchdogSec=`` in
    ``systemd/swabline-agent.service``). ``READY=1`` goes with the first tick, once the loop runs.

    Args:
        notify_socket: ``$NOTIFY_SOCKET``; when it is unset (not started by systemd, a laptop, the
            tests) every call does nothing.
        watchdog_usec: ``$WATCHDOG_USEC``; the watchdog is fed four times per period, at most once
            a second when the period is unknown.
        status: returns the one-line status shown by ``systemctl status``.
        monotonic: the clock used to pace the messages.
    """

    def __init__(
        self,
        *,
        notify_socket: str | None,
        watchdog_usec: str | None = None,
        status: Callable[[], str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status = status
        self._monotonic = monotonic
        self._ready = False
        self._last: float | None = None
        period_s = int(watchdog_usec) / 1e6 if watchdog_usec and watchdog_usec.isdigit() else 0
        self.interval_s = min(1.0, period_s / 4) if period_s else 1.0
        # sdnotify opens its socket at construction, and leaks it when NOTIFY_SOCKET is unset.
        self._notifier = sdnotify.SystemdNotifier() if notify_socket else None

    @property
    def active(self) -> bool:
        return self._notifier is not None

    def __call__(self) -> None:
        if self._notifier is None:
            return
        now = self._monotonic()
        if self._ready and self._last is not None and now - self._last < self.interval_s:
            return
        lines = ["WATCHDOG=1"] if self._ready else ["READY=1", "WATCHDOG=1"]
        if self._status is not None:
            lines.append("STATUS=" + self._status().replace("\n", " "))
        self._notifier.notify("\n".join(lines))
        self._ready, self._last = True, now

    def stopping(self) -> None:
        """Announce a deliberate stop (``STOPPING=1``), so systemd does not count it a failure."""
        if self._notifier is not None:
            self._notifier.notify("STOPPING=1")

    def close(self) -> None:
        if self._notifier is not None:
            sock = self._notifier.socket
            if sock is not None:
                sock.close()
            self._notifier = None
