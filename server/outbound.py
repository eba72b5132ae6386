"""Outbound hooks: JSON POSTed to webhooks, with retries and a delivery log.

Generic, so every kind of outbound message (ops alerts, result notifications) goes the same
way: ``enqueue`` adds a row to ``outbound_deliveries`` in the caller's transaction (so a
message is sent if and only if the change that caused it was committed); ``OutboundWorker``
delivers due rows, retrying with exponential backoff until a 2xx answer or ``max_attempts``.
Delivery is at least once: a receiver may see a message twice (after a timeout whose request
did arrive) and can tell by the ``X-Swabline-Delivery`` header.

Each body can be signed: ``X-Swabline-Signature: sha256=<hex HMAC-SHA256 of the body>`` with
the target's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server import __version__
from server.models import OutboundDelivery

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """Where messages of one kind go. ``name`` is stored with each delivery."""

    name: str
    url: str
    secret: bytes | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 10
    retry_min_s: float = 5.0
    retry_max_s: float = 900.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure."""
        return float(min(self.retry_max_s, self.retry_min_s * 2 ** max(0, attempts - 1)))


def enqueue(
    session: Session, target: Target, event: str, payload: Mapping[str, Any], *, now: datetime
) -> OutboundDelivery:
    """Add a delivery of ``payload`` to ``target`` (committed with the caller's transaction)."""
    row = OutboundDelivery(
        target=target.name,
        url=target.url,
        event=event,
        payload=dict(payload),
        state="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """What one delivery attempt came to. ``ok`` only when the receiver accepted it."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0


class OutboundHook(Protocol):
    """Delivers one message. Never raises for a delivery failure: it reports it in the outcome
    and the worker retries. (The same shape as the result notifications' hooks, so one
    transport serves both.)"""

    name: str

    def deliver(self, *, event: str, delivery_id: str, payload: dict[str, Any]) -> HookOutcome: ...


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Swabline-Signature`` header value of ``body``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookHook:
    """POSTs each message as JSON to ``url`` with the standard library; 2xx means delivered.

    Headers: ``X-Swabline-Event``, ``X-Swabline-Delivery`` (the same id on every retry of one
    message) and, with a ``secret``, ``X-Swabline-Signature``. Needs outbound HTTP(S) to the
    receiver (system CA store for HTTPS).
    """

    name = "webhook"

    def __init__(self, *, url: str, secret: bytes | None = None, timeout_s: float = 10.0) -> None:
        self.url = url
        self._secret = secret
        self._timeout_s = timeout_s

    def deliver(self, *, event: str, delivery_id: str, payload: dict[str, Any]) -> HookOutcome:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"swabline/{__version__}",
            "X-Swabline-Event": event,
            "X-Swabline-Delivery": delivery_id,
        }
        if self._secret:
            headers["X-Swabline-Signature"] = signature(self._secret, body)
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return HookOutcome(
                ok=False,
                error=f"{type(exc).__name__}: {reason}"[:500],
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        elapsed = (time.perf_counter() - started) * 1000
        ok = 200 <= status < 300
        return HookOutcome(ok, status, None if ok else f"HTTP {status}", elapsed)


def body_of(delivery: OutboundDelivery) -> dict[str, Any]:
    """What the receiver gets: the payload, with the event and the delivery id in it."""
    return {"event": delivery.event, "delivery_id": delivery.id, **delivery.payload}


class OutboundWorker:
    """Delivers due rows of ``outbound_deliveries`` through the hook of each row's target.

    Args:
        engine: the database.
        hooks: target name -> hook (``WebhookHook``); rows of an unknown target wait.
        policy: attempts and backoff.
        clock: now, timezone-aware.
        batch: most deliveries handled per pass.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        hooks: Mapping[str, OutboundHook],
        policy: RetryPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch: int = 50,
    ) -> None:
        self._engine = engine
        self._hooks = dict(hooks)
        self._policy = policy
        self._clock = clock
        self._batch = batch
        self.wake = threading.Event()

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Deliver until ``stop`` is set; ``wake`` cuts the idle wait short."""
        while not stop.is_set():
            try:
                busy = self.deliver_due() > 0
            except Exception:  # keep delivering later; the rows are still pending
                log.exception("outbound delivery pass failed")
                busy = False
            if not busy:
                self.wake.wait(idle_s)
                self.wake.clear()

    def deliver_due(self) -> int:
        """One pass over due deliveries; returns how many were attempted."""
        now = self._clock()
        with Session(self._engine) as session:
            due = session.scalars(
                select(OutboundDelivery)
                .where(
                    OutboundDelivery.state == "pending",
                    OutboundDelivery.next_attempt_at <= now,
                    OutboundDelivery.target.in_(sorted(self._hooks)),
                )
                .order_by(OutboundDelivery.next_attempt_at, OutboundDelivery.id)
                .limit(self._batch)
            ).all()
            for delivery in due:
                self._attempt(delivery)
                session.commit()
            return len(due)

    def _attempt(self, d: OutboundDelivery) -> None:
        hook = self._hooks[d.target]
        d.attempts += 1
        outcome = hook.deliver(event=d.event, delivery_id=str(d.id), payload=body_of(d))
        now = self._clock()
        d.last_status = outcome.status_code
        d.last_error = None if outcome.ok else (outcome.error or "failed")[:500]
        if outcome.ok:
            d.state, d.delivered_at = "delivered", now
            log.info("delivered %s #%d to %s", d.event, d.id, d.target)
        elif d.attempts >= self._policy.max_attempts:
            d.state = "failed"
            log.error(
                "giving up %s #%d to %s after %d attempts: %s",
                d.event,
                d.id,
                d.target,
                d.attempts,
                d.last_error,
            )
        else:
            d.next_attempt_at = now + timedelta(seconds=self._policy.delay(d.attempts))
            log.warning(
                "delivery %s #%d to %s failed (%s); attempt %d at %s",
                d.event,
                d.id,
                d.target,
                d.last_error,
                d.attempts + 1,
                d.next_attempt_at.isoformat(),
            )
