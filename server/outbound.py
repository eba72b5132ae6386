"""Outbound messages: how the server tells the outside world. Result notifications (to an SMS
or app gateway) and ops alerts (to a chat or alerting system) take the same way:

1. ``enqueue`` adds a message for a *target* (``results``, ``alerts``) to ``notifications`` in
   the caller's transaction, so a message exists if and only if the change that caused it was
   committed. A ``dedup_key`` makes enqueueing idempotent.
2. ``OutboundWorker`` hands each due message to its target's hook (``OutboundHook``: the real
   one is ``WebhookHook``; ``server.fakes.RecordingHook`` keeps messages in memory), retries
   failures with one ``RetryPolicy`` and logs every attempt in ``notification_deliveries``.

Delivery is at least once: a receiver may see a message twice (after a timeout whose request
did arrive) and can tell by the ``X-Swabline-Delivery`` header, the same on every retry. Each
body can be signed: ``X-Swabline-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the
target's key. Messages of a target without a hook wait (they go out once one is configured).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server import __version__
from server.config import OutboundConfig, OutboundTarget
from server.errors import ConfigError
from server.models import Notification, NotificationDelivery
from server.signing import load_secret

log = logging.getLogger(__name__)

RESULTS = "results"
"""Target of result notifications to persons (``[outbound.results]``)."""
ALERTS = "alerts"
"""Target of ops alert changes (``[outbound.alerts]``)."""

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the hook -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """What one delivery attempt came to. ``ok`` only when the receiver accepted it."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0


class OutboundHook(Protocol):
    """Something that delivers one message. Never raises for a delivery failure: it reports
    it in the outcome, and the worker retries."""

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
    the receiver; ``client`` may be injected (proxies, custom CA).
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
        self.url = url
        self._secret = secret
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)

    def deliver(self, *, event: str, delivery_id: str, payload: dict[str, Any]) -> HookOutcome:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"swabline/{__version__}",
            "X-Swabline-Event": event,
            "X-Swabline-Delivery": delivery_id,
        }
        if self._secret is not None:
            headers["X-Swabline-Signature"] = signature(self._secret, body)
        started = time.perf_counter()
        try:
            response = self._client.post(self.url, content=body, headers=headers)
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


# --- the queue ----------------------------------------------------------------------------------


def enqueue(
    session: Session,
    target: str,
    event: str,
    payload: Mapping[str, Any],
    *,
    dedup_key: str,
    person_id: int | None = None,
    result_id: int | None = None,
    now: datetime | None = None,
) -> None:
    """Queue a message for ``target`` in ``session``'s transaction; a second one with the same
    ``dedup_key`` is ignored."""
    at = now or _utcnow()
    values = {
        "target": target,
        "event": event,
        "dedup_key": dedup_key[:128],
        "payload": dict(payload),
        "person_id": person_id,
        "result_id": result_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
    }
    if session.get_bind().dialect.name == "postgresql":
        stmt: Any = postgresql.insert(Notification).values(values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(Notification).values(values).on_conflict_do_nothing()
    session.execute(stmt)


def delivery_id(message_id: int) -> str:
    """The ``X-Swabline-Delivery`` id of a message (the same on every retry)."""
    return f"n-{message_id}"


def body_of(message_id: int, event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the receiver gets: the payload, with the event and the delivery id in it."""
    return {"event": event, "delivery_id": delivery_id(message_id), **payload}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 12
    retry_min_s: float = 10.0
    retry_max_s: float = 3600.0

    def delay_s(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (1, 2, ...)."""
        return float(min(self.retry_max_s, self.retry_min_s * 2 ** max(0, attempts - 1)))


class OutboundWorker:
    """Delivers due messages through the hook of each one's target.

    Several workers (server processes) may run: each claims a message by moving its
    ``next_attempt_at`` ``lease_s`` ahead before delivering it, so a message is attempted by one
    worker at a time and a worker that dies mid-attempt leaves it to be retried after the lease.

    Args:
        engine: the database.
        hooks: target name -> hook; messages of other targets wait.
        policy: attempts and backoff.
        poll_s: how often due messages are looked for when idle (``wake`` cuts it short).
        clock: now, timezone-aware.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        hooks: Mapping[str, OutboundHook],
        policy: RetryPolicy,
        poll_s: float = 5.0,
        batch: int = 50,
        lease_s: float = 120.0,
        clock: Clock = _utcnow,
    ) -> None:
        self._engine = engine
        self.hooks = dict(hooks)
        self._policy = policy
        self._poll_s = poll_s
        self._batch = batch
        self._lease = timedelta(seconds=lease_s)
        self._clock = clock
        self.wake = threading.Event()

    def run(self, stop: threading.Event, *, before: Callable[[], object] | None = None) -> None:
        """Deliver until ``stop`` is set, calling ``before`` (the sweep that queues result
        notifications still missing) ahead of each pass. A failed pass (the database gone) is
        logged and tried again after ``poll_s``: the messages are still in the database."""
        while not stop.is_set():
            try:
                if before is not None:
                    before()
                busy = self.deliver_due() > 0
            except Exception:
                log.exception("outbound delivery pass failed")
                busy = False
            if not busy:
                self.wake.wait(self._poll_s)
                self.wake.clear()

    def deliver_due(self) -> int:
        """Attempt every due message once; returns how many were attempted."""
        if not self.hooks:
            return 0
        now = self._clock()
        with Session(self._engine) as session:
            due = session.execute(
                select(Notification.id, Notification.next_attempt_at)
                .where(
                    Notification.status == "pending",
                    Notification.next_attempt_at <= now,
                    Notification.target.in_(sorted(self.hooks)),
                )
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(self._batch)
            ).all()
        attempted = 0
        for mid, due_at in due:
            if self._claim(mid, due_at, now):
                self._attempt(mid)
                attempted += 1
        return attempted

    def _claim(self, mid: int, due_at: datetime, now: datetime) -> bool:
        with Session(self._engine) as session, session.begin():
            claimed = session.execute(
                update(Notification)
                .where(
                    Notification.id == mid,
                    Notification.status == "pending",
                    Notification.next_attempt_at == due_at,
                )
                .values(next_attempt_at=now + self._lease)
            )
            return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]

    def _attempt(self, mid: int) -> None:
        with Session(self._engine) as session:
            m = session.get(Notification, mid)
            assert m is not None
            target, event, attempt = m.target, m.event, m.attempts + 1
            body = body_of(mid, event, m.payload)
        hook = self.hooks[target]
        outcome = hook.deliver(event=event, delivery_id=delivery_id(mid), payload=body)
        now = self._clock()
        with Session(self._engine) as session, session.begin():
            m = session.get(Notification, mid)
            assert m is not None
            m.attempts = attempt
            error = None if outcome.ok else (outcome.error or "failed")[:500]
            session.add(
                NotificationDelivery(
                    notification_id=mid,
                    attempt=attempt,
                    at=now,
                    hook=hook.name,
                    ok=outcome.ok,
                    status_code=outcome.status_code,
                    error=error,
                    duration_ms=outcome.duration_ms,
                )
            )
            if outcome.ok:
                m.status, m.sent_at, m.last_error = "sent", now, None
                log.info("delivered %s %s to %s", event, delivery_id(mid), target)
            elif attempt >= self._policy.max_attempts:
                m.status, m.last_error = "failed", error
                log.error(
                    "giving up %s %s to %s after %d attempts: %s",
                    event,
                    delivery_id(mid),
                    target,
                    attempt,
                    error,
                )
            else:
                m.last_error = error
                m.next_attempt_at = now + timedelta(seconds=self._policy.delay_s(attempt))
                log.warning(
                    "delivery of %s %s to %s failed (%s); attempt %d at %s",
                    event,
                    delivery_id(mid),
                    target,
                    error,
                    attempt + 1,
                    m.next_attempt_at.isoformat(),
                )

    def close(self) -> None:
        for hook in self.hooks.values():
            close = getattr(hook, "close", None)
            if close is not None:
                close()


# --- from the configuration ---------------------------------------------------------------------


def _hook(engine: Engine, config: OutboundConfig, name: str, target: OutboundTarget) -> WebhookHook:
    assert target.webhook_url is not None
    secret = None
    if target.secret_file is not None:
        try:
            secret = load_secret(engine, f"outbound-{name}", target.secret_file)
        except ConfigError as exc:
            raise ConfigError(f"outbound.{name}.secret_file: {exc}") from None
    return WebhookHook(url=target.webhook_url, secret=secret, timeout_s=config.timeout_s)


def hooks_from_config(engine: Engine, config: OutboundConfig) -> dict[str, OutboundHook]:
    """A webhook per target that has a ``webhook_url``."""
    hooks: dict[str, OutboundHook] = {}
    for name, target in ((RESULTS, config.results), (ALERTS, config.alerts)):
        if target.webhook_url:
            hooks[name] = _hook(engine, config, name, target)
    return hooks


def worker_from_config(
    engine: Engine, config: OutboundConfig, *, clock: Clock = _utcnow
) -> OutboundWorker:
    """The server's one outbound worker, as ``[outbound]`` describes it."""
    return OutboundWorker(
        engine=engine,
        hooks=hooks_from_config(engine, config),
        policy=RetryPolicy(
            max_attempts=config.max_attempts,
            retry_min_s=config.retry_min_s,
            retry_max_s=config.retry_max_s,
        ),
        poll_s=config.poll_s,
        clock=clock,
    )
