"""Result notifications: the ``results`` target of the outbound transport.

Queued in the database with the write that causes them (``enqueue``, or the sweep in
``server.results.sweep_notifications``), delivered with every other outbound message by
``server.outbound.OutboundWorker``: same hook, retries and delivery log as ops alerts.
Queueing in the same transaction as the result means a result is never notified without being
stored, nor stored without its notification.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from server import outbound


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
    """Queue a result notification in ``session``'s transaction; a second one with the same
    ``dedup_key`` is ignored."""
    outbound.enqueue(
        session,
        outbound.RESULTS,
        event,
        payload,
        dedup_key=dedup_key,
        person_id=person_id,
        result_id=result_id,
        now=now,
    )
