"""Sequence gaps: records a station made (it numbered them) that the server does not have.

A station numbers its records 1, 2, 3, ... (``seq``). ``stations.max_seq`` and
``stations.record_count`` (kept by ingest) give a cheap suspicion: ``max_seq - record_count``
records are missing. Records the server refused but kept (``rejected_messages`` with a
``seq``) are accounted for, not missing. Gaps right after a burst are normal (several ingest
workers commit out of order, the station resends); the alert waits ``gap_grace_s``.

A **seq collision** (a record whose (station, seq) another record already holds, e.g. a
reinstalled station that numbered again from a seq it had used) is missing too: ingest
acknowledges it and keeps it in ``rejected_messages`` with ``collides_with`` set, but it is in
neither the log nor the domain tables. Each one is reported as the one-seq range ``(seq,
seq)`` and counted, so the station's gap report shows it and the ``sequence_gap`` alert fires.
"""

from __future__ import annotations

from sqlalchemy import func, literal_column, select, union
from sqlalchemy.orm import Session

from server.models import RecordRow, RejectedMessage, StationRow


def suspected_missing(session: Session) -> dict[str, int]:
    """Stations whose highest ``seq`` exceeds their stored record count, with the difference,
    and stations with seq collisions (counted)."""
    rows = session.execute(
        select(StationRow.station_id, StationRow.max_seq - StationRow.record_count).where(
            StationRow.max_seq > StationRow.record_count
        )
    ).all()
    out = {sid: int(n) for sid, n in rows}
    for sid, n in session.execute(
        select(RejectedMessage.station_id, func.count())
        .where(RejectedMessage.collides_with.is_not(None))
        .group_by(RejectedMessage.station_id)
    ):
        out[str(sid)] = out.get(str(sid), 0) + int(n)
    return out


def missing_ranges(
    session: Session, station_id: str, *, limit: int = 100
) -> tuple[list[tuple[int, int]], int]:
    """The missing ``seq`` ranges (first, last) of a station, at most ``limit``, and the total
    number of missing records (over every range). A seq collision is the range (seq, seq)."""
    collided = [
        seq
        for seq in session.scalars(
            select(RejectedMessage.seq).where(
                RejectedMessage.station_id == station_id,
                RejectedMessage.collides_with.is_not(None),
                RejectedMessage.seq.is_not(None),
            )
        )
        if seq is not None
    ]
    top = session.scalar(select(StationRow.max_seq).where(StationRow.station_id == station_id))
    if not top:
        ranges = sorted((seq, seq) for seq in collided)
        return ranges[:limit], len(ranges)
    have = union(
        select(RecordRow.seq.label("seq")).where(RecordRow.station_id == station_id),
        select(RejectedMessage.seq.label("seq")).where(
            RejectedMessage.station_id == station_id,
            RejectedMessage.seq.is_not(None),
            RejectedMessage.seq <= top,
            RejectedMessage.collides_with.is_(None),
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
    ranges = sorted(ranges + [(seq, seq) for seq in collided])
    total = sum(b - a + 1 for a, b in ranges)
    return ranges[:limit], total
