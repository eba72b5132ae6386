"""Sequence gaps: records a station made (it numbered them) that the server does not have.

A station numbers its records 1, 2, 3, ... (``seq``). ``stations.max_seq`` and
``stations.record_count`` (kept by ingest) give a cheap suspicion: ``max_seq - record_count``
records are missing. Records the server refused but kept (``rejected_messages`` with a
``seq``) are accounted for, not missing. Gaps right after a burst are normal (several ingest
workers commit out of order, the station resends); the alert waits ``gap_grace_s``.
"""

from __future__ import annotations

from sqlalchemy import func, literal_column, select, union
from sqlalchemy.orm import Session

from server.models import RecordRow, RejectedMessage, StationRow


def suspected_missing(session: Session) -> dict[str, int]:
    """Stations whose highest ``seq`` exceeds their stored record count, with the difference."""
    rows = session.execute(
        select(StationRow.station_id, StationRow.max_seq - StationRow.record_count).where(
            StationRow.max_seq > StationRow.record_count
        )
    ).all()
    return {sid: int(n) for sid, n in rows}


def missing_ranges(
    session: Session, station_id: str, *, limit: int = 100
) -> tuple[list[tuple[int, int]], int]:
    """The missing ``seq`` ranges (first, last) of a station, at most ``limit``, and the total
    number of missing records (over every range)."""
    top = session.scalar(select(StationRow.max_seq).where(StationRow.station_id == station_id))
    if not top:
        return [], 0
    have = union(
        select(RecordRow.seq.label("seq")).where(RecordRow.station_id == station_id),
        select(RejectedMessage.seq.label("seq")).where(
            RejectedMessage.station_id == station_id,
            RejectedMessage.seq.is_not(None),
            RejectedMessage.seq <= top,
        ),
    ).subquery()
    ordered = select(
        have.c.seq,
        func.lag(have.c.seq, 1, 0).over(order_by=have.c.seq).label("prev"),
    ).subquery()
    gaps = select(
        (ordered.c.prev + literal_column("1")).label("first"),
        (ordered.c.seq - literal_column("1")).label("last"),
    ).where(ordered.c.seq - ordered.c.prev > 1)
    ranges = [(int(a), int(b)) for a, b in session.execute(gaps.order_by("first")).all()]
    total = sum(b - a + 1 for a, b in ranges)
    return ranges[:limit], total
