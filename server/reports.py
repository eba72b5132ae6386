"""The health department's reports: samples, persons, pools, positivity, turnaround, station
uptime and throughput, per facility, district and province, for a day, a week or a month.

Everything is counted per facility and per local hour in SQL (so a month of a province is a few
thousand rows, not a million), then summed up the organisation tree in Python. Turnaround is
kept as a histogram of 5-minute buckets, which sums exactly, so the median and the 90th
percentile of a district are those of all its samples, to within 5 minutes.

Definitions (also in ``docs/reports.md``):

- a **sample** is a tube whose pool was closed (its ``collected`` event) in the period, counted
  at its sampling facility; **pools** and **singles** split them by mode; **persons** counts
  the people in those samples (each person once per sample given);
- **positive / negative / invalid** are those samples' current results; **positivity** is
  positive / (positive + negative); **recall** counts the persons in positive pools;
- **turnaround** is, for tubes whose first result came in the period, first result minus
  collection (negative durations from wrong station clocks count as 0);
- **station uptime** is, over the local days a station was in use, the share of minutes it was
  heard from (a heartbeat, a birth or a record arrived) within its **day of use**: from the
  first minute it was heard (or the first hour it made records) to the last, joined with the
  facility's operating hours (``facility_schedules``) when it has a schedule. Whole hours of
  silence in the middle of a day count as down; **throughput** is its records per hour in use
  (an hour in which it was heard or made records).
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Engine,
    func,
    select,
)
from sqlalchemy.orm import Session

from server.models import (
    FacilitySchedule,
    Organisation,
    PoolMember,
    SampleEvent,
    StationActivity,
    StationRow,
    Tube,
)
from server.ops.schedule import Schedule

TAT_BUCKET_S = 300


class PeriodKind(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class Period:
    """A local calendar day, ISO week (Monday to Sunday) or month."""

    kind: PeriodKind
    start: date

    @classmethod
    def containing(cls, kind: PeriodKind, day: date) -> Period:
        if kind is PeriodKind.WEEK:
            return cls(kind, day - timedelta(days=day.weekday()))
        if kind is PeriodKind.MONTH:
            return cls(kind, day.replace(day=1))
        return cls(kind, day)

    @property
    def end(self) -> date:
        """The first day after the period."""
        if self.kind is PeriodKind.WEEK:
            return self.start + timedelta(days=7)
        if self.kind is PeriodKind.MONTH:
            y, m = divmod(self.start.month, 12)
            return date(self.start.year + y, m + 1, 1)
        return self.start + timedelta(days=1)

    def previous(self) -> Period:
        return Period.containing(self.kind, self.start - timedelta(days=1))

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    @property
    def label(self) -> str:
        if self.kind is PeriodKind.WEEK:
            year, week, _ = self.start.isocalendar()
            return f"{year}-W{week:02d}"
        if self.kind is PeriodKind.MONTH:
            return f"{self.start:%Y-%m}"
        return self.start.isoformat()

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """The period as UTC instants [start, end)."""
        lo = datetime.combine(self.start, datetime.min.time(), tz).astimezone(UTC)
        hi = datetime.combine(self.end, datetime.min.time(), tz).astimezone(UTC)
        return lo, hi


def percentile_from_histogram(hist: Counter[int], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of a histogram of ``TAT_BUCKET_S`` buckets, in hours
    (bucket midpoint)."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return (bucket + 0.5) * TAT_BUCKET_S / 3600
    raise AssertionError("unreachable")


@dataclass
class Metrics:
    """Additive counts for one facility, district or province over some time."""

    samples: int = 0
    pools: int = 0
    singles: int = 0
    persons: int = 0
    positive: int = 0
    negative: int = 0
    invalid: int = 0
    recall: int = 0
    tat: Counter[int] = field(default_factory=Counter)
    station_records: int = 0
    station_minutes: int = 0
    station_hours: int = 0
    station_span_minutes: int = 0
    """The minutes of the stations' days of use (the denominator of uptime)."""

    def add(self, other: Metrics) -> None:
        for name in (
            "samples",
            "pools",
            "singles",
            "persons",
            "positive",
            "negative",
            "invalid",
            "recall",
            "station_records",
            "station_minutes",
            "station_hours",
            "station_span_minutes",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.tat.update(other.tat)

    @property
    def resulted(self) -> int:
        return self.positive + self.negative + self.invalid

    @property
    def positivity(self) -> float | None:
        decided = self.positive + self.negative
        return self.positive / decided if decided else None

    @property
    def tat_median_h(self) -> float | None:
        return percentile_from_histogram(self.tat, 0.5)

    @property
    def tat_p90_h(self) -> float | None:
        return percentile_from_histogram(self.tat, 0.9)

    @property
    def tat_count(self) -> int:
        return sum(self.tat.values())

    @property
    def uptime(self) -> float | None:
        span = self.station_span_minutes
        return min(self.station_minutes / span, 1.0) if span else None

    @property
    def throughput_per_h(self) -> float | None:
        return self.station_records / self.station_hours if self.station_hours else None


@dataclass
class StationLine:
    station_id: str
    name: str | None
    facility_id: int | None
    metrics: Metrics


@dataclass
class ReportRow:
    level: str
    """``facility``, ``district`` or ``province``."""
    org: Organisation
    parent: Organisation | None
    metrics: Metrics


@dataclass
class Report:
    period: Period
    node: Organisation
    rows: list[ReportRow]
    total: Metrics
    daily: list[tuple[date, Metrics]]
    stations: list[StationLine]
    generated_at: datetime
    timezone: str


# --- SQL helpers --------------------------------------------------------------------------


def _hour_key(session: Session, column: Any) -> ColumnElement[str]:
    """The UTC hour of ``column`` as text ``YYYY-MM-DD HH`` (the same on both databases)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", column)


def _epoch(session: Session, column: Any) -> ColumnElement[float]:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", column)  # type: ignore[return-value]
    return (func.julianday(column) - 2440587.5) * 86400.0


def _local_day(hour_key: str, tz: ZoneInfo) -> date:
    at = datetime.strptime(hour_key, "%Y-%m-%d %H").replace(tzinfo=UTC)
    return at.astimezone(tz).date()


# --- building a report ---------------------------------------------------------------------


def facilities_under(session: Session, node: Organisation) -> list[Organisation]:
    return list(
        session.scalars(
            select(Organisation)
            .where(
                Organisation.kind == "facility",
                Organisation.path.startswith(node.path, autoescape=True),
            )
            .order_by(Organisation.path)
        )
    )


def build_report(
    session: Session,
    node: Organisation,
    period: Period,
    *,
    tz: ZoneInfo,
    facility_ids: Iterable[int] | None = None,
) -> Report:
    """The report of ``node``'s subtree for ``period``.

    Args:
        facility_ids: restrict to these facilities (the caller's scope); default: all under
            ``node``.
    """
    facilities = facilities_under(session, node)
    if facility_ids is not None:
        allowed = set(facility_ids)
        facilities = [f for f in facilities if f.id in allowed]
    fac_ids = [f.id for f in facilities]
    lo, hi = period.bounds(tz)
    per: dict[tuple[int, date], Metrics] = {}

    def slot(facility_id: int, hour_key: str) -> Metrics:
        return per.setdefault((facility_id, _local_day(hour_key, tz)), Metrics())

    if fac_ids:
        _count_samples(session, fac_ids, lo, hi, slot)
        _count_turnaround(session, fac_ids, lo, hi, slot)
        stations = _count_stations(session, fac_ids, lo, hi, slot, tz)
    else:
        stations = []

    by_fac: dict[int, Metrics] = {f: Metrics() for f in fac_ids}
    by_day: dict[date, Metrics] = {d: Metrics() for d in period.days()}
    for (fid, day), m in per.items():
        by_fac[fid].add(m)
        if day in by_day:
            by_day[day].add(m)

    orgs = {o.id: o for o in session.scalars(select(Organisation))}
    rows: list[ReportRow] = []
    groups: dict[int, Metrics] = {}
    for f in facilities:
        rows.append(ReportRow("facility", f, orgs.get(f.parent_id or -1), by_fac[f.id]))
        ancestor = orgs.get(f.parent_id or -1)
        while ancestor is not None and ancestor.path.startswith(node.path):
            groups.setdefault(ancestor.id, Metrics()).add(by_fac[f.id])
            ancestor = orgs.get(ancestor.parent_id or -1)
    for oid, m in groups.items():
        org = orgs[oid]
        level = "province" if org.kind == "province" else org.kind
        rows.append(ReportRow(level, org, orgs.get(org.parent_id or -1), m))
    order = {"facility": 0, "district": 1, "province": 2}
    rows.sort(key=lambda r: (order.get(r.level, 3), r.org.path))
    total = Metrics()
    for m in by_fac.values():
        total.add(m)
    return Report(
        period=period,
        node=node,
        rows=rows,
        total=total,
        daily=sorted(by_day.items()),
        stations=stations,
        generated_at=datetime.now(UTC),
        timezone=str(tz),
    )


def _count_samples(
    session: Session, fac_ids: list[int], lo: datetime, hi: datetime, slot: Any
) -> None:
    collected = (
        select(SampleEvent.tube_id, func.min(SampleEvent.at).label("at"))
        .where(SampleEvent.kind == "collected", SampleEvent.at >= lo, SampleEvent.at < hi)
        .group_by(SampleEvent.tube_id)
        .subquery()
    )
    hour = _hour_key(session, collected.c.at)
    persons = (
        select(func.count())
        .where(PoolMember.tube_id == Tube.id, PoolMember.undone_at.is_(None))
        .correlate(Tube)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Tube.facility_id,
            hour,
            Tube.mode,
            Tube.result,
            func.count(),
            func.coalesce(func.sum(persons), 0),
        )
        .join(collected, collected.c.tube_id == Tube.id)
        .where(Tube.facility_id.in_(fac_ids))
        .group_by(Tube.facility_id, hour, Tube.mode, Tube.result)
    ).all()
    for fid, hour_key, mode, result, n, people in rows:
        m: Metrics = slot(fid, hour_key)
        m.samples += n
        m.persons += int(people)
        if mode == "pool":
            m.pools += n
        else:
            m.singles += n
        if result == "positive":
            m.positive += n
            if mode == "pool":
                m.recall += int(people)
        elif result == "negative":
            m.negative += n
        elif result == "invalid":
            m.invalid += n


def _count_turnaround(
    session: Session, fac_ids: list[int], lo: datetime, hi: datetime, slot: Any
) -> None:
    # Plain joins of grouped subqueries: correlated subqueries here made SQLite re-evaluate
    # them per row (minutes for a month).
    in_period = (
        select(SampleEvent.tube_id)
        .where(SampleEvent.kind == "resulted", SampleEvent.at >= lo, SampleEvent.at < hi)
        .scalar_subquery()
    )
    first_result = (
        select(SampleEvent.tube_id.label("tube_id"), func.min(SampleEvent.at).label("r_at"))
        .where(SampleEvent.kind == "resulted", SampleEvent.tube_id.in_(in_period))
        .group_by(SampleEvent.tube_id)
        .subquery()
    )
    collected = (
        select(SampleEvent.tube_id.label("tube_id"), func.min(SampleEvent.at).label("c_at"))
        .where(SampleEvent.kind == "collected", SampleEvent.tube_id.in_(in_period))
        .group_by(SampleEvent.tube_id)
        .subquery()
    )
    seconds = _epoch(session, first_result.c.r_at) - _epoch(session, collected.c.c_at)
    # Whole seconds first: SQLite's julianday arithmetic leaves 35999.99 for 10 h.
    bucket = func.floor(func.round(seconds) / TAT_BUCKET_S)
    hour = _hour_key(session, first_result.c.r_at)
    rows = session.execute(
        select(Tube.facility_id, hour, bucket, func.count())
        .select_from(first_result)
        .join(collected, collected.c.tube_id == first_result.c.tube_id)
        .join(Tube, Tube.id == first_result.c.tube_id)
        .where(
            Tube.facility_id.in_(fac_ids),
            first_result.c.r_at >= lo,
            first_result.c.r_at < hi,
        )
        .group_by(Tube.facility_id, hour, bucket)
    ).all()
    for fid, hour_key, b, n in rows:
        m: Metrics = slot(fid, hour_key)
        m.tat[max(int(b), 0)] += n


MINUTES_MASK = (1 << 60) - 1


def _count_stations(
    session: Session,
    fac_ids: list[int],
    lo: datetime,
    hi: datetime,
    slot: Any,
    tz: ZoneInfo,
) -> list[StationLine]:
    hour = _hour_key(session, StationActivity.hour)
    rows = session.execute(
        select(
            StationRow.station_id,
            StationRow.name,
            StationRow.facility_id,
            hour,
            StationActivity.minutes,
            StationActivity.records,
        )
        .join(StationActivity, StationActivity.station_id == StationRow.station_id)
        .where(
            StationRow.facility_id.in_(fac_ids),
            StationActivity.hour >= lo,
            StationActivity.hour < hi,
        )
    ).all()
    schedules = _schedules(session, fac_ids)
    lines: dict[str, StationLine] = {}
    # (station, local day) -> [facility, an hour key of that day, first minute, end minute]
    days: dict[tuple[str, date], list[Any]] = {}
    for sid, name, fid, hour_key, minutes, records in rows:
        line = lines.setdefault(sid, StationLine(sid, name, fid, Metrics()))
        mask = int(minutes or 0) & MINUTES_MASK
        part = Metrics(
            station_minutes=mask.bit_count(),
            station_records=int(records or 0),
            station_hours=1,
        )
        line.metrics.add(part)
        slot(fid, hour_key).add(part)
        start = _epoch_minute(datetime.strptime(hour_key, "%Y-%m-%d %H").replace(tzinfo=UTC))
        if mask:  # heard: from the first minute heard to the last
            first, end = start + (mask & -mask).bit_length() - 1, start + mask.bit_length()
        else:  # records made (offline) but not heard: the hour was in use
            first, end = start, start + 60
        day = days.setdefault((sid, _local_day(hour_key, tz)), [fid, hour_key, first, end])
        day[2], day[3] = min(day[2], first), max(day[3], end)
    for (sid, local_day), (fid, hour_key, first, end) in days.items():
        spans = [(first, end), *_scheduled(schedules.get(fid), local_day, tz)]
        part = Metrics(station_span_minutes=_union_length(spans))
        lines[sid].metrics.add(part)
        slot(fid, hour_key).add(part)
    return sorted(lines.values(), key=lambda s: s.station_id)


def _epoch_minute(at: datetime) -> int:
    return int(at.timestamp()) // 60


def _schedules(session: Session, fac_ids: list[int]) -> dict[int, Schedule]:
    """The operating hours of these facilities (a schedule that no longer reads is left out)."""
    out: dict[int, Schedule] = {}
    for row in session.scalars(
        select(FacilitySchedule).where(FacilitySchedule.facility_id.in_(fac_ids))
    ):
        try:
            out[row.facility_id] = Schedule.model_validate(
                {"timezone": row.timezone, "windows": row.windows}
            )
        except ValueError:
            continue
    return out


def _scheduled(schedule: Schedule | None, day: date, tz: ZoneInfo) -> list[tuple[int, int]]:
    """The operating hours that fall on local ``day`` (``tz``), as [start, end) epoch minutes."""
    if schedule is None:
        return []
    day_lo = _epoch_minute(datetime.combine(day, time(), tz))
    day_hi = _epoch_minute(datetime.combine(day + timedelta(days=1), time(), tz))
    zone = ZoneInfo(schedule.timezone)
    out = []
    for window in schedule.windows:
        start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
        for offset in (-1, 0, 1):  # the schedule's own days around ``day``
            d = day + timedelta(days=offset)
            if d.isoweekday() not in window.days:
                continue
            lo = _epoch_minute(datetime.combine(d, start, zone))
            end_day = d if end > start else d + timedelta(days=1)
            hi = _epoch_minute(datetime.combine(end_day, end, zone))
            lo, hi = max(lo, day_lo), min(hi, day_hi)
            if lo < hi:
                out.append((lo, hi))
    return out


def _union_length(spans: list[tuple[int, int]]) -> int:
    total, reach = 0, None
    for lo, hi in sorted(spans):
        if reach is None or lo > reach:
            total += hi - lo
            reach = hi
        elif hi > reach:
            total += hi - reach
            reach = hi
    return total


def engine_report(engine: Engine, node_id: int, period: Period, *, tz: ZoneInfo) -> Report | None:
    """``build_report`` in its own session (for the scheduler and the command line)."""
    with Session(engine) as session:
        node = session.get(Organisation, node_id)
        if node is None:
            return None
        report = build_report(session, node, period, tz=tz)
        session.expunge_all()
        return report
