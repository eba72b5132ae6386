"""Heartbeat history: bounded samples per station, chart series, retention and thinning.

Ingest keeps at most one sample per station per ``history_step_s`` (the first heartbeat of each
step; an insert that finds its step taken does nothing, so several ingest workers agree). The
monitor thins samples older than ``history_full_hours`` to one per ``history_coarse_step_s``
and deletes those older than ``history_days``: per station at most
``full_hours * 3600 / step + days * 86400 / coarse_step`` rows, however long it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from protocol import Heartbeat
from server.db import upsert
from server.models import StationSample, table

SAMPLED = (
    "uptime_s",
    "outbox_depth",
    "oldest_pending_age_s",
    "scans_today",
    "cpu_temp_c",
    "load_avg",
    "mem_available_mb",
    "disk_free_mb",
    "wifi_signal_dbm",
    "mqtt_reconnects",
    "under_voltage",
    "throttled",
)


def sample_row(
    station_id: str, hb: Heartbeat, received_at: datetime, step_s: int
) -> dict[str, Any]:
    """The ``station_samples`` row of one heartbeat (``clock_offset_s`` measured by the server:
    the station's clock in the heartbeat minus the time it arrived)."""
    row: dict[str, Any] = {name: getattr(hb, name) for name in SAMPLED}
    row.update(
        station_id=station_id,
        bucket=int(received_at.timestamp()) // step_s,
        at=received_at,
        clock_offset_s=round(hb.time - received_at.timestamp(), 3),
    )
    return row


def store_samples(session: Session, engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the rows whose (station, bucket) is still free."""
    firsts: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        firsts.setdefault((row["station_id"], row["bucket"]), row)
    if firsts:
        stmt = upsert(engine, table(StationSample)).on_conflict_do_nothing(
            index_elements=["station_id", "bucket"]
        )
        session.execute(stmt, list(firsts.values()))


@dataclass(frozen=True, slots=True)
class Series:
    """One chart: (time, value) points, oldest first."""

    name: str
    unit: str
    points: list[tuple[datetime, float]]


def _counter_deltas(values: list[tuple[datetime, int | None]]) -> list[tuple[datetime, float]]:
    """Increases of a running total that restarts (at midnight, at an agent restart)."""
    out: list[tuple[datetime, float]] = []
    prev: int | None = None
    for at, value in values:
        if value is None:
            continue
        if prev is not None:
            out.append((at, float(value - prev if value >= prev else value)))
        prev = value
    return out


def _per_hour(deltas: list[tuple[datetime, float]]) -> list[tuple[datetime, float]]:
    hours: dict[datetime, float] = {}
    for at, d in deltas:
        hour = at.replace(minute=0, second=0, microsecond=0)
        hours[hour] = hours.get(hour, 0.0) + d
    return sorted(hours.items())


def station_series(session: Session, station_id: str, since: datetime) -> dict[str, Series]:
    """Chart series of a station since ``since``: backlog, scans per hour, temperature,
    reconnects per hour, disk free, Wi-Fi signal."""
    rows = session.execute(
        select(
            StationSample.at,
            StationSample.outbox_depth,
            StationSample.scans_today,
            StationSample.cpu_temp_c,
            StationSample.mqtt_reconnects,
            StationSample.disk_free_mb,
            StationSample.wifi_signal_dbm,
        )
        .where(StationSample.station_id == station_id, StationSample.at >= since)
        .order_by(StationSample.at)
    ).all()

    def points(i: int) -> list[tuple[datetime, float]]:
        return [(r[0], float(v)) for r in rows if isinstance(v := r[i], int | float)]

    return {
        "backlog": Series("backlog", "records", points(1)),
        "scans_per_hour": Series(
            "scans_per_hour", "scans/h", _per_hour(_counter_deltas([(r[0], r[2]) for r in rows]))
        ),
        "temperature": Series("temperature", "°C", points(3)),
        "reconnects_per_hour": Series(
            "reconnects_per_hour",
            "/h",
            _per_hour(_counter_deltas([(r[0], r[4]) for r in rows])),
        ),
        "disk_free": Series("disk_free", "MiB", points(5)),
        "wifi": Series("wifi", "dBm", points(6)),
    }


def backlog_at(session: Session, when: datetime, slack: timedelta) -> dict[str, int]:
    """Each station's outbox depth at its first sample in ``[when, when + slack]``."""
    first = (
        select(StationSample.station_id, func.min(StationSample.at).label("at"))
        .where(StationSample.at >= when, StationSample.at <= when + slack)
        .group_by(StationSample.station_id)
        .subquery()
    )
    rows = session.execute(
        select(StationSample.station_id, StationSample.outbox_depth).join(
            first,
            (StationSample.station_id == first.c.station_id) & (StationSample.at == first.c.at),
        )
    ).all()
    return {sid: int(depth) for sid, depth in rows if depth is not None}


def prune(
    session: Session,
    now: datetime,
    *,
    step_s: int,
    full_hours: int,
    coarse_step_s: int,
    days: int,
) -> int:
    """Thin and expire samples; returns how many rows were deleted."""
    deleted = session.execute(
        delete(StationSample).where(StationSample.at < now - timedelta(days=days))
    ).rowcount  # type: ignore[attr-defined]
    cut = now - timedelta(hours=full_hours)
    per = max(1, coarse_step_s // step_s)
    keep = (
        select(func.min(StationSample.id))
        .where(StationSample.at < cut)
        .group_by(StationSample.station_id, StationSample.bucket // per)
    )
    deleted += session.execute(
        delete(StationSample).where(StationSample.at < cut, StationSample.id.not_in(keep))
    ).rowcount  # type: ignore[attr-defined]
    return int(deleted)
