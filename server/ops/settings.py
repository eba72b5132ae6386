"""Settings ops change in the web app: alert thresholds and facility operating hours.

Thresholds: the configuration file gives the defaults (``[alerts.thresholds]``); a value set in
the web app is stored in ``ops_settings`` and wins until it is reset. Only callers whose fleet
scope covers the whole province (``fleet.operate`` at a root node) may change them: they apply
to every station. Operating hours are per facility, changed by anyone who operates or manages
that facility (``fleet.operate`` or ``station.write``). Every change is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.access import Permission, Principal
from server.audit import audit, snapshot
from server.config import AlertThresholds
from server.errors import BadRequestError, ForbiddenError, NotFoundError
from server.models import FacilitySchedule, OpsSetting, Organisation
from server.ops.schedule import Schedule

_PREFIX = "thresholds."


def overrides(session: Session) -> dict[str, Any]:
    rows = session.scalars(select(OpsSetting).where(OpsSetting.key.startswith(_PREFIX)))
    return {r.key[len(_PREFIX) :]: r.value for r in rows}


def effective_thresholds(session: Session, defaults: AlertThresholds) -> AlertThresholds:
    """The configured thresholds with the web app's overrides applied (bad ones ignored)."""
    merged = defaults.model_dump()
    for key, value in overrides(session).items():
        if key in merged:
            candidate = {**merged, key: value}
            try:
                AlertThresholds.model_validate(candidate)
            except ValidationError:
                continue
            merged = candidate
    return AlertThresholds.model_validate(merged)


def _require_province(principal: Principal) -> None:
    scope = principal.require(Permission.FLEET_OPERATE)
    if not scope.includes_unassigned:
        raise ForbiddenError(
            "alert thresholds apply province-wide: a province-level role is needed"
        )


def set_thresholds(
    session: Session,
    principal: Principal,
    changes: dict[str, Any],
    *,
    defaults: AlertThresholds,
    now: datetime,
    remote_addr: str | None = None,
) -> AlertThresholds:
    """Override thresholds (``None`` resets one to the file's value). Audited."""
    _require_province(principal)
    unknown = set(changes) - set(AlertThresholds.model_fields)
    if unknown:
        raise BadRequestError(f"unknown threshold(s): {', '.join(sorted(unknown))}")
    before = effective_thresholds(session, defaults)
    candidate = {**before.model_dump(), **{k: v for k, v in changes.items() if v is not None}}
    try:
        AlertThresholds.model_validate(candidate)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        raise BadRequestError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    for key, value in changes.items():
        row = session.get(OpsSetting, _PREFIX + key)
        if value is None:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(
                OpsSetting(
                    key=_PREFIX + key, value=value, updated_at=now, updated_by=principal.user_id
                )
            )
        else:
            row.value, row.updated_at, row.updated_by = value, now, principal.user_id
    session.flush()
    after = effective_thresholds(session, defaults)
    audit(
        session,
        principal,
        "ops.thresholds",
        object_type="ops_settings",
        object_id="thresholds",
        organisation_id=None,
        before=before.model_dump(),
        after=after.model_dump(),
        remote_addr=remote_addr,
    )
    return after


def _facility_in_scope(session: Session, principal: Principal, facility_id: int) -> Organisation:
    facility = session.get(Organisation, facility_id)
    allowed = [
        principal.scope(p)
        for p in (Permission.FLEET_OPERATE, Permission.STATION_WRITE)
        if principal.can(p)
    ]
    if not allowed:
        raise ForbiddenError("your roles do not allow changing operating hours")
    if (
        facility is None
        or facility.kind != "facility"
        or not any(s.covers_path(facility.path) for s in allowed)
    ):
        raise NotFoundError(f"no facility {facility_id}")
    return facility


def set_schedule(
    session: Session,
    principal: Principal,
    facility_id: int,
    schedule: dict[str, Any] | None,
    *,
    now: datetime,
    remote_addr: str | None = None,
) -> Schedule | None:
    """Set (or, with ``None``, delete) a facility's operating hours. Audited."""
    facility = _facility_in_scope(session, principal, facility_id)
    row = session.get(FacilitySchedule, facility_id)
    before = snapshot(row)
    parsed: Schedule | None = None
    if schedule is None:
        session.execute(delete(FacilitySchedule).where(FacilitySchedule.facility_id == facility_id))
        after = None
    else:
        try:
            parsed = Schedule.model_validate(schedule)
        except ValidationError as exc:
            err = exc.errors(include_url=False, include_input=False)[0]
            raise BadRequestError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        windows = [w.model_dump() for w in parsed.windows]
        if row is None:
            row = FacilitySchedule(facility_id=facility_id)
            session.add(row)
        row.timezone, row.windows = parsed.timezone, windows
        row.updated_at, row.updated_by = now, principal.user_id
        session.flush()
        after = snapshot(row)
    audit(
        session,
        principal,
        "ops.schedule",
        object_type="facility_schedule",
        object_id=facility_id,
        organisation_id=facility.id,
        before=before,
        after=after,
        remote_addr=remote_addr,
    )
    return parsed
