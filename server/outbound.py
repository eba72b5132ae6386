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
    timeout_s: float = 10.0

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


class OutboundError(OSError):
    """A POST failed before an HTTP status came back (refused, timed out, DNS)."""


class Poster(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        """POST ``body``; return the HTTP status, or raise ``OutboundError``."""
        ...


class UrllibPoster:
    """POSTs with the standard library (HTTP and HTTPS, system CA store)."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OutboundError(f"{type(exc).__name__}: {reason}") from exc


def body_of(delivery: OutboundDelivery) -> bytes:
    envelope = {"event": delivery.event, "delivery_id": delivery.id, **delivery.payload}
    return json.dumps(envelope, ensure_ascii=False, sort_keys=True, default=str).encode()


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class OutboundWorker:
    """Delivers due rows of ``outbound_deliveries``.

    Args:
        engine: the database.
        targets: name -> target, for the secret to sign with (the URL is in each row).
        policy: attempts, backoff and timeout.
        poster: the HTTP client (``UrllibPoster``).
        clock: now, timezone-aware.
        batch: most deliveries handled per pass.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        targets: Mapping[str, Target],
        policy: RetryPolicy,
        poster: Poster | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch: int = 50,
    ) -> None:
        self._engine = engine
        self._targets = dict(targets)
        self._policy = policy
        self._poster = poster or UrllibPoster()
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
                .where(OutboundDelivery.state == "pending", OutboundDelivery.next_attempt_at <= now)
                .order_by(OutboundDelivery.next_attempt_at, OutboundDelivery.id)
                .limit(self._batch)
            ).all()
            for delivery in due:
                self._attempt(delivery)
                session.commit()
            return len(due)

    def _attempt(self, d: OutboundDelivery) -> None:
        body = body_of(d)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"swabline/{__version__}",
            "X-Swabline-Event": d.event,
            "X-Swabline-Delivery": str(d.id),
        }
        target = self._targets.get(d.target)
        if target is not None and target.secret:
            headers["X-Swabline-Signature"] = signature(target.secret, body)
        d.attempts += 1
        status: int | None = None
        try:
            status = self._poster.post(d.url, body, headers, self._policy.timeout_s)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except OutboundError as exc:
            error = str(exc)
        now = self._clock()
        d.last_status, d.last_error = status, error[:500] if error else None
        if error is None:
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
                error,
            )
        else:
            d.next_attempt_at = now + timedelta(seconds=self._policy.delay(d.attempts))
            log.warning(
                "delivery %s #%d to %s failed (%s); attempt %d at %s",
                d.event,
                d.id,
                d.target,
                error,
                d.attempts + 1,
                d.next_attempt_at.isoformat(),
            )
