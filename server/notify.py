"""Notifications: queued in the database with the write that causes them, delivered by a
background ``Dispatcher`` through an ``OutboundHook`` with retries and a delivery log.

Queueing in the same transaction as the result means a result is never notified without being
stored, nor stored without its notification. Delivery is at least once: the receiver gets the
same ``X-Swabline-Delivery`` id on a retry and should drop duplicates.

Backoff: after the n-th failed attempt the next one waits ``backoff_base_s * 2**(n-1)``, at most
``backoff_max_s``; after ``max_attempts`` failures the notification is marked failed (kept, with
every attempt in ``notification_deliveries``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.hooks import OutboundHook
from server.models import Notification, NotificationDelivery

log = logging.getLogger(__name__)

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def enqueue(
    session: Session,
    *,
    event: str,
    dedup_key: str,
    payload: dict[str, Any],
    person_id: int | None = None,
    result_id: int | None = None,
    now: datetime | None = None,
) -> None:
    """Queue a notification in ``session``'s transaction; a second one with the same
    ``dedup_key`` is ignored."""
    at = now or _utcnow()
    values = {
        "event": event,
        "dedup_key": dedup_key[:128],
        "payload": payload,
        "person_id": person_id,
        "result_id": result_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": at,
        "created_at": at,
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(Notification).values(values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(Notification).values(values).on_conflict_do_nothing()
    session.execute(stmt)


def backoff_s(attempts: int, *, base_s: float, max_s: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts (1, 2, ...)."""
    return float(min(max_s, base_s * 2 ** max(attempts - 1, 0)))


class Dispatcher:
    """Delivers due notifications through ``hook``; several dispatchers (processes) may run:
    each claims a notification by moving its ``next_attempt_at`` before delivering it."""

    def __init__(
        self,
        *,
        engine: Engine,
        hook: OutboundHook,
        backoff_base_s: float = 30.0,
        backoff_max_s: float = 3600.0,
        max_attempts: int = 8,
        batch_size: int = 50,
        poll_s: float = 5.0,
        lease_s: float = 120.0,
        now: Now = _utcnow,
    ) -> None:
        self._engine = engine
        self._hook = hook
        self._base, self._max = backoff_base_s, backoff_max_s
        self._max_attempts = max_attempts
        self._batch = batch_size
        self._poll_s = poll_s
        self._lease = timedelta(seconds=lease_s)
        self._now = now

    def run(self, stop: threading.Event, *, before: Callable[[], object] | None = None) -> None:
        """Deliver until ``stop`` is set, calling ``before`` (e.g. a sweep that queues missing
        notifications) ahead of each round. Database errors propagate."""
        while not stop.is_set():
            if before is not None:
                before()
            if self.run_once() == 0:
                stop.wait(self._poll_s)

    def run_once(self) -> int:
        """Attempt every due notification once; returns how many were attempted."""
        now = self._now()
        with Session(self._engine) as session:
            due = session.execute(
                select(Notification.id, Notification.next_attempt_at)
                .where(Notification.status == "pending", Notification.next_attempt_at <= now)
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(self._batch)
            ).all()
        attempted = 0
        for nid, due_at in due:
            if self._claim(nid, due_at, now):
                self._attempt(nid)
                attempted += 1
        return attempted

    def _claim(self, nid: int, due_at: datetime, now: datetime) -> bool:
        with Session(self._engine) as session, session.begin():
            claimed = session.execute(
                update(Notification)
                .where(
                    Notification.id == nid,
                    Notification.status == "pending",
                    Notification.next_attempt_at == due_at,
                )
                .values(next_attempt_at=now + self._lease)
            )
            return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]

    def _attempt(self, nid: int) -> None:
        with Session(self._engine) as session:
            n = session.get(Notification, nid)
            assert n is not None
            event, payload, attempt = n.event, dict(n.payload), n.attempts + 1
        outcome = self._hook.deliver(event=event, delivery_id=f"n-{nid}", payload=payload)
        now = self._now()
        with Session(self._engine) as session, session.begin():
            n = session.get(Notification, nid)
            assert n is not None
            n.attempts = attempt
            session.add(
                NotificationDelivery(
                    notification_id=nid,
                    attempt=attempt,
                    at=now,
                    hook=self._hook.name,
                    ok=outcome.ok,
                    status_code=outcome.status_code,
                    error=outcome.error[:500] if outcome.error else None,
                    duration_ms=outcome.duration_ms,
                )
            )
            if outcome.ok:
                n.status, n.sent_at, n.last_error = "sent", now, None
            elif attempt >= self._max_attempts:
                n.status, n.last_error = "failed", outcome.error
                log.warning("notification %d failed for good after %d attempts", nid, attempt)
            else:
                n.last_error = outcome.error
                n.next_attempt_at = now + timedelta(
                    seconds=backoff_s(attempt, base_s=self._base, max_s=self._max)
                )
