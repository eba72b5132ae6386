"""Alerts in the database: opened, kept, acknowledged and resolved.

``sync`` applies one evaluation of the fleet: a condition that holds and has no live alert
opens one; a live alert whose condition was judged and no longer holds is resolved
automatically. Ops acknowledge an alert ("someone is on it": no further notification) or
resolve it by hand; a condition that still holds after a manual resolution opens a new alert
at the next evaluation. Every change is notified through ``Notifier`` (the outbound webhook),
and every change made by a person is in the audit log.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.access import Permission, Principal
from server.audit import audit, snapshot
from server.errors import ConflictError, NotFoundError
from server.models import Alert, Organisation, StationRow
from server.ops.i18n import LANGS, alert_text
from server.ops.rules import Evaluation

Notifier = Callable[[Session, str, Alert], None]
"""Called with the session, the event (``alert.opened``...) and the alert, before commit."""


def active_key(station_id: str, kind: str) -> str:
    return f"{station_id}/{kind}"


@dataclass
class SyncResult:
    opened: list[Alert]
    resolved: list[Alert]


def sync(
    session: Session,
    evaluations: Mapping[str, tuple[int | None, Evaluation]],
    *,
    now: datetime,
    notify: Notifier,
    retired: Iterable[str] = (),
) -> SyncResult:
    """Apply ``evaluations`` (station id -> (facility id, evaluation)) to the live alerts.

    Live alerts of ``retired`` stations (deactivated) are resolved.
    """
    live: dict[str, dict[str, Alert]] = defaultdict(dict)
    for a in session.scalars(select(Alert).where(Alert.active_key.is_not(None))):
        live[a.station_id][a.kind] = a
    result = SyncResult([], [])

    def close(alert: Alert, note: str | None = None) -> None:
        _resolve(alert, now, None, note)
        result.resolved.append(alert)
        notify(session, "alert.resolved", alert)

    for station_id, (facility_id, ev) in evaluations.items():
        current = live.get(station_id, {})
        for kind, finding in ev.findings.items():
            alert = current.get(kind.value)
            if alert is not None:
                alert.last_seen_at = now
                alert.detail = finding.detail
                continue
            alert = Alert(
                station_id=station_id,
                facility_id=facility_id,
                kind=kind.value,
                severity=finding.severity,
                state="open",
                active_key=active_key(station_id, kind.value),
                detail=finding.detail,
                opened_at=now,
                last_seen_at=now,
            )
            session.add(alert)
            session.flush()
            result.opened.append(alert)
            notify(session, "alert.opened", alert)
        holding = {k.value for k in ev.findings}
        for kind_name, alert in current.items():
            if kind_name in ev.judged and kind_name not in holding:
                close(alert)
    for sid in set(retired):
        for alert in live.get(sid, {}).values():
            close(alert, "station deactivated")
    return result


def _resolve(alert: Alert, now: datetime, user_id: int | None, note: str | None = None) -> None:
    alert.state = "resolved"
    alert.resolved_at = now
    alert.resolved_by = user_id
    alert.active_key = None
    if note:
        alert.note = note[:500]


def _load_in_scope(session: Session, principal: Principal, alert_id: int) -> Alert:
    scope = principal.require(Permission.FLEET_OPERATE)
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise NotFoundError(f"no alert {alert_id}")
    facility = session.scalar(
        select(StationRow.facility_id).where(StationRow.station_id == alert.station_id)
    )
    if not scope.covers_path(_facility_path(session, facility)):
        raise NotFoundError(f"no alert {alert_id}")
    return alert


def _facility_path(session: Session, facility_id: int | None) -> str | None:
    if facility_id is None:
        return None
    return session.scalar(select(Organisation.path).where(Organisation.id == facility_id))


def acknowledge(
    session: Session,
    principal: Principal,
    alert_id: int,
    *,
    now: datetime,
    note: str | None,
    notify: Notifier,
    remote_addr: str | None = None,
) -> Alert:
    """Open -> acknowledged (someone is on it). Audited."""
    alert = _load_in_scope(session, principal, alert_id)
    if alert.state != "open":
        raise ConflictError(f"alert {alert_id} is {alert.state}, not open")
    before = snapshot(alert)
    alert.state = "acknowledged"
    alert.acknowledged_at = now
    alert.acknowledged_by = principal.user_id
    if note:
        alert.note = note[:500]
    audit(
        session,
        principal,
        "alert.acknowledge",
        object_type="alert",
        object_id=alert.id,
        organisation_id=alert.facility_id,
        before=before,
        after=snapshot(alert),
        remote_addr=remote_addr,
    )
    notify(session, "alert.acknowledged", alert)
    return alert


def resolve(
    session: Session,
    principal: Principal,
    alert_id: int,
    *,
    now: datetime,
    note: str | None,
    notify: Notifier,
    remote_addr: str | None = None,
) -> Alert:
    """Open/acknowledged -> resolved by hand. Audited."""
    alert = _load_in_scope(session, principal, alert_id)
    if alert.state == "resolved":
        raise ConflictError(f"alert {alert_id} is already resolved")
    before = snapshot(alert)
    _resolve(alert, now, principal.user_id, note)
    audit(
        session,
        principal,
        "alert.resolve",
        object_type="alert",
        object_id=alert.id,
        organisation_id=alert.facility_id,
        before=before,
        after=snapshot(alert),
        remote_addr=remote_addr,
    )
    notify(session, "alert.resolved", alert)
    return alert


def alert_json(alert: Alert, station_name: str | None = None) -> dict[str, Any]:
    """An alert as the API and the webhook show it (texts in every language)."""
    label = station_name or alert.station_id
    return {
        "id": alert.id,
        "station_id": alert.station_id,
        "facility_id": alert.facility_id,
        "kind": alert.kind,
        "severity": alert.severity,
        "state": alert.state,
        "detail": alert.detail,
        "opened_at": alert.opened_at.isoformat(),
        "last_seen_at": alert.last_seen_at.isoformat(),
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        "acknowledged_by": alert.acknowledged_by,
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "resolved_by": alert.resolved_by,
        "automatic": alert.state == "resolved" and alert.resolved_by is None,
        "note": alert.note,
        "text": {lang: alert_text(alert.kind, alert.detail, label, lang) for lang in LANGS},
    }
