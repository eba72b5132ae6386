"""Test doubles for the server's seams, shipped so that a laptop runs a server without a
gateway."""

from __future__ import annotations

import threading
from typing import Any

from server.outbound import HookOutcome


class RecordingHook:
    """An ``OutboundHook`` that keeps every message; fails the first ``fail_first`` attempts."""

    name = "recording"

    def __init__(self, *, fail_first: int = 0) -> None:
        self.deliveries: list[tuple[str, str, dict[str, Any]]] = []
        self.attempts = 0
        self._fail_first = fail_first
        self._lock = threading.Lock()

    def deliver(self, *, event: str, delivery_id: str, payload: dict[str, Any]) -> HookOutcome:
        with self._lock:
            self.attempts += 1
            if self.attempts <= self._fail_first:
                return HookOutcome(ok=False, error="recording hook: scripted failure")
            self.deliveries.append((event, delivery_id, payload))
            return HookOutcome(ok=True, status_code=200)
