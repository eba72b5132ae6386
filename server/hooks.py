"""Outbound hooks: how the server hands a message to the outside world (an SMS or app gateway,
an alerting system). Each hook is one ``OutboundHook``; ``server/notify.py`` queues messages in
the database and retries them with backoff, logging every attempt.

The real hook is ``WebhookHook`` (an HTTP POST of JSON); ``server/fakes.py`` has
``RecordingHook`` for tests and for running without a gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """What one delivery attempt came to. ``ok`` only when the receiver accepted it."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0


class OutboundHook(Protocol):
    """Something that delivers one message. Never raises for delivery failures: it reports
    them in the outcome, and the caller retries."""

    name: str

    def deliver(self, *, event: str, delivery_id: str, payload: dict[str, Any]) -> HookOutcome:
        """Hand ``payload`` (an ``event`` message with a stable ``delivery_id``) over."""
        ...


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Swabline-Signature`` header value of ``body``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookHook:
    """POSTs each message as JSON to ``url``; a 2xx answer means delivered.

    Headers: ``X-Swabline-Event`` (the event name), ``X-Swabline-Delivery`` (the same id on
    every retry of one message, so the receiver can drop duplicates) and, when a ``secret`` is
    set, ``X-Swabline-Signature: sha256=<HMAC-SHA256 of the body>``. Needs outbound HTTP(S) to
    the gateway; ``client`` may be injected (tests, proxies).
    """

    name = "webhook"

    def __init__(
        self,
        *,
        url: str,
        secret: bytes | None = None,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self._url = url
        self._secret = secret
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)

    def deliver(self, *, event: str, delivery_id: str, payload: dict[str, Any]) -> HookOutcome:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Swabline-Event": event,
            "X-Swabline-Delivery": delivery_id,
            "User-Agent": "swabline-webhook/1",
        }
        if self._secret is not None:
            headers["X-Swabline-Signature"] = signature(self._secret, body)
        started = time.perf_counter()
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return HookOutcome(
                ok=False,
                error=f"{type(exc).__name__}: {exc}"[:500],
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        elapsed = (time.perf_counter() - started) * 1000
        if 200 <= response.status_code < 300:
            return HookOutcome(ok=True, status_code=response.status_code, duration_ms=elapsed)
        return HookOutcome(
            ok=False,
            status_code=response.status_code,
            error=f"HTTP {response.status_code}: {response.text[:200]}",
            duration_ms=elapsed,
        )

    def close(self) -> None:
        self._client.close()
