"""Station activity per hour: which minutes a station was heard from, and how many records it
made. Written by ingest with every batch; read by the reports (station uptime, throughput)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.models import StationActivity, table


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def record_activity(
    session: Session,
    *,
    heard: Iterable[tuple[str, datetime]] = (),
    records: Iterable[tuple[str, datetime]] = (),
) -> None:
    """Mark the minutes stations were ``heard`` (a heartbeat, a record, a birth arrived) and
    count their ``records`` (by when each was made), in ``session``'s transaction."""
    buckets: dict[tuple[str, datetime], list[int]] = {}
    for station_id, at in heard:
        entry = buckets.setdefault((station_id, hour_of(at)), [0, 0])
        entry[0] |= 1 << at.astimezone(UTC).minute
    for station_id, at in records:
        entry = buckets.setdefault((station_id, hour_of(at)), [0, 0])
        entry[1] += 1
    if not buckets:
        return
    rows = [
        {"station_id": sid, "hour": hour, "minutes": minutes, "records": count}
        for (sid, hour), (minutes, count) in sorted(buckets.items())
    ]
    # Core statement on the session's connection, built once per dialect: ingest calls this
    # with every batch, and the ORM's bulk-insert path cost about a millisecond each time.
    session.connection().execute(_upsert(session.get_bind().dialect.name), rows)


_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    stmt = _UPSERTS.get(dialect)
    if stmt is None:
        activity = table(StationActivity)
        ins: Any = (
            postgresql.insert(activity) if dialect == "postgresql" else sqlite.insert(activity)
        )
        stmt = _UPSERTS[dialect] = ins.on_conflict_do_update(
            index_elements=[activity.c.station_id, activity.c.hour],
            set_={
                "minutes": activity.c.minutes.op("|")(ins.excluded.minutes),
                "records": activity.c.records + ins.excluded.records,
            },
        )
    return stmt
