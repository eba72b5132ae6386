"""The fleet as ops see it: every station with its derived status, place and latest health.

``load_fleet`` runs a handful of queries whatever the fleet size (stations with their ops
state, organisations, schedules, live alerts) and assembles ``StationView`` objects that the
monitor, the pages, the JSON API and ``/metrics`` all share.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.access import Scope
from server.models import Alert, FacilitySchedule, Organisation, StationOpsState, StationRow
from server.ops.schedule import Schedule, in_operating_hours
from server.ops.status import Status, StatusRules, derive_status

SEVERITY_RANK = {"critical": 2, "warning": 1}


@dataclass(frozen=True, slots=True)
class LiveAlert:
    id: int
    kind: str
    severity: str
    state: str
    opened_at: datetime
    detail: dict[str, Any]


@dataclass
class StationView:
    station_id: str
    name: str | None
    active: bool
    facility_id: int | None
    facility_name: str | None
    facility_code: str | None
    facility_path: str | None
    district_id: int | None
    district_name: str | None
    district_code: str | None
    state: str
    status: Status
    status_since: datetime
    in_hours: bool
    last_heartbeat_at: datetime | None
    last_seen_at: datetime | None
    agent_version: str | None
    heartbeat: dict[str, Any]
    max_seq: int
    record_count: int
    gap_missing: int = 0
    gap_since: datetime | None = None
    alerts: list[LiveAlert] = field(default_factory=list)

    def hb(self, key: str) -> Any:
        return self.heartbeat.get(key)

    @property
    def server_offset_s(self) -> float | None:
        """Station clock minus server clock at the last heartbeat's arrival."""
        sent = self.heartbeat.get("time")
        if self.last_heartbeat_at is None or not isinstance(sent, int | float):
            return None
        return round(float(sent) - self.last_heartbeat_at.timestamp(), 3)

    @property
    def worst_severity(self) -> str | None:
        live = [a.severity for a in self.alerts]
        return max(live, key=lambda s: SEVERITY_RANK.get(s, 0)) if live else None

    @property
    def display_status(self) -> str:
        """``online``/``stale``/``offline``/``unknown``, and ``offline_closed`` when the station is
        down outside its facility's operating hours (expected, shown grey)."""
        if self.status in (Status.OFFLINE, Status.STALE, Status.UNKNOWN) and not self.in_hours:
            return "offline_closed"
        return self.status.value

    def problem_rank(self) -> tuple[int, int, str]:
        """Sort key: worst first (critical alerts, offline in hours, stale, warnings...)."""
        status_rank = {
            "offline": 4,
            "stale": 3,
            "unknown": 1,
            "offline_closed": 0,
            "online": 0,
        }[self.display_status]
        return (-SEVERITY_RANK.get(self.worst_severity or "", 0), -status_rank, self.station_id)


@dataclass(frozen=True, slots=True)
class Place:
    facility_name: str
    facility_code: str
    facility_path: str
    district_id: int | None
    district_name: str | None
    district_code: str | None


def _places(session: Session) -> dict[int, Place]:
    orgs = {
        o.id: o
        for o in session.scalars(select(Organisation).where(Organisation.kind != "province"))
    }
    out: dict[int, Place] = {}
    for org in orgs.values():
        if org.kind != "facility":
            continue
        district = None
        parent = orgs.get(org.parent_id) if org.parent_id is not None else None
        while parent is not None and district is None:
            if parent.kind == "district":
                district = parent
            parent = orgs.get(parent.parent_id) if parent.parent_id is not None else None
        out[org.id] = Place(
            org.name,
            org.code,
            org.path,
            district.id if district else None,
            district.name if district else None,
            district.code if district else None,
        )
    return out


def load_schedules(session: Session, default_timezone: str) -> dict[int, Schedule]:
    out: dict[int, Schedule] = {}
    for row in session.scalars(select(FacilitySchedule)):
        out[row.facility_id] = Schedule.model_validate(
            {"timezone": row.timezone or default_timezone, "windows": row.windows}
        )
    return out


def live_alerts(
    session: Session, station_ids: set[str] | None = None
) -> dict[str, list[LiveAlert]]:
    q = select(
        Alert.station_id,
        Alert.id,
        Alert.kind,
        Alert.severity,
        Alert.state,
        Alert.opened_at,
        Alert.detail,
    ).where(Alert.active_key.is_not(None))
    if station_ids is not None:
        q = q.where(Alert.station_id.in_(sorted(station_ids)))
    out: dict[str, list[LiveAlert]] = defaultdict(list)
    for r in session.execute(q.order_by(Alert.opened_at)):
        out[r.station_id].append(
            LiveAlert(r.id, r.kind, r.severity, r.state, r.opened_at, dict(r.detail))
        )
    return out


def load_fleet(
    session: Session,
    *,
    now: datetime,
    rules: StatusRules,
    default_timezone: str,
    scope: Scope | None = None,
    station_id: str | None = None,
    include_inactive: bool = False,
) -> list[StationView]:
    """Every station (in ``scope``, if given) with its derived status, place and alerts.

    Reads plain columns (no ORM objects): the fleet page and /metrics call it for thousands of
    stations.
    """
    st, ops = StationRow, StationOpsState
    q = select(
        st.station_id,
        st.name,
        st.active,
        st.facility_id,
        st.state,
        st.last_heartbeat_at,
        st.last_seen_at,
        st.agent_version,
        st.heartbeat,
        st.max_seq,
        st.record_count,
        st.created_at,
        ops.status,
        ops.status_since,
        ops.gap_missing,
        ops.gap_since,
    ).outerjoin(ops, ops.station_id == st.station_id)
    if scope is not None:
        q = q.where(scope.filter(st.facility_id))
    if station_id is not None:
        q = q.where(st.station_id == station_id)
    if not include_inactive:
        q = q.where(st.active.is_(True))
    rows = session.execute(q.order_by(st.station_id)).all()
    places = _places(session)
    schedules = load_schedules(session, default_timezone)
    alerts = live_alerts(session, {r.station_id for r in rows} if station_id else None)
    open_now: dict[int | None, bool] = {}
    views = []
    for r in rows:
        hb = dict(r.heartbeat or {})
        interval = hb.get("heartbeat_s")
        status = derive_status(
            state=r.state,
            last_heartbeat_at=r.last_heartbeat_at,
            last_seen_at=r.last_seen_at,
            heartbeat_s=float(interval) if isinstance(interval, int | float) else None,
            now=now,
            rules=rules,
        )
        if r.status == status.value and r.status_since is not None:
            since = r.status_since
        elif status is Status.ONLINE:
            since = now
        else:
            seen = [t for t in (r.last_heartbeat_at, r.last_seen_at) if t is not None]
            since = max(seen) if seen else (r.created_at or now)
        place = places.get(r.facility_id) if r.facility_id is not None else None
        if r.facility_id not in open_now:
            schedule = schedules.get(r.facility_id) if r.facility_id is not None else None
            open_now[r.facility_id] = in_operating_hours(schedule, now)
        views.append(
            StationView(
                station_id=r.station_id,
                name=r.name,
                active=r.active,
                facility_id=r.facility_id,
                facility_name=place.facility_name if place else None,
                facility_code=place.facility_code if place else None,
                facility_path=place.facility_path if place else None,
                district_id=place.district_id if place else None,
                district_name=place.district_name if place else None,
                district_code=place.district_code if place else None,
                state=r.state,
                status=status,
                status_since=since,
                in_hours=open_now[r.facility_id],
                last_heartbeat_at=r.last_heartbeat_at,
                last_seen_at=r.last_seen_at,
                agent_version=hb.get("agent_version") or r.agent_version,
                heartbeat=hb,
                max_seq=r.max_seq,
                record_count=r.record_count,
                gap_missing=r.gap_missing or 0,
                gap_since=r.gap_since,
                alerts=alerts.get(r.station_id, []),
            )
        )
    return views
