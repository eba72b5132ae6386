"""Feedback without hardware: signals written to the log."""

from __future__ import annotations

import logging

from agent.ports import Condition, Signal

log = logging.getLogger("swabline.signal")


class LogFeedback:
    """Writes each signal and condition change to the log; for development and the demo."""

    def __init__(self) -> None:
        self._active: set[Condition] = set()

    def signal(self, signal: Signal) -> None:
        log.info("signal %s", signal.value)

    def set_condition(self, condition: Condition, active: bool) -> None:
        if active != (condition in self._active):
            (self._active.add if active else self._active.discard)(condition)
            log.info("condition %s %s", condition.value, "on" if active else "off")

    def close(self) -> None:
        pass


class NoFeedback:
    """Shows nothing."""

    def signal(self, signal: Signal) -> None:
        pass

    def set_condition(self, condition: Condition, active: bool) -> None:
        pass

    def close(self) -> None:
        pass
