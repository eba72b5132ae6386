"""Sequence gaps: records a station numbered that never reached the central database.

Every station numbers its records 1, 2, 3, ... without ever repeating or skipping a number, so
a seq missing below the highest one stored is data that did not arrive (yet): an alarm, not a
footnote. A gap may close by itself while the station is still sending its backlog (records
travel pipelined, not strictly in order); one that stays while the station reports an empty
outbox means the records are lost.

``find_gaps`` is the rule on plain numbers; ``station_gaps`` and ``gap_summary`` ask the
database the same question with a window function, so that only the edges of each gap leave
the database, never every seq.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Subquery, func, select
from sqlalchemy.orm import Session

from server.models import RecordRow


@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs ``first`` to ``last`` (inclusive) are missing."""

    first: int
    last: int

    @property
    def missing(self) -> int:
        return self.last - self.first + 1


def find_gaps(seqs: Iterable[int]) -> list[Gap]:
    """The missing ranges between 1 and the highest of ``seqs`` (duplicates are ignored)."""
    gaps: list[Gap] = []
    previous = 0
    for seq in sorted(set(seqs)):
        if seq > previous + 1:
            gaps.append(Gap(previous + 1, seq - 1))
        previous = seq
    return gaps


def _edges(station_id: str | None = None) -> tuple[Subquery, ColumnElement[bool]]:
    previous = func.lag(RecordRow.seq, 1, 0).over(
        partition_by=RecordRow.station_id, order_by=RecordRow.seq
    )
    q = select(
        RecordRow.station_id.label("station_id"),
        RecordRow.seq.label("seq"),
        previous.label("previous"),
    )
    if station_id is not None:
        q = q.where(RecordRow.station_id == station_id)
    sub = q.subquery()
    return (sub, sub.c.seq > sub.c.previous + 1)


def station_gaps(session: Session, station_id: str) -> list[Gap]:
    """The gaps in one station's stored seqs, in order."""
    sub, is_gap = _edges(station_id)
    rows = session.execute(
        select(sub.c.previous, sub.c.seq).where(is_gap).order_by(sub.c.seq)
    ).all()
    return [Gap(int(prev) + 1, int(seq) - 1) for prev, seq in rows]


@dataclass(frozen=True, slots=True)
class GapSummary:
    gaps: int
    missing: int


def gap_summary(session: Session) -> dict[str, GapSummary]:
    """Per station with at least one gap: how many gaps and how many seqs are missing."""
    sub, is_gap = _edges()
    rows = session.execute(
        select(
            sub.c.station_id,
            func.count(),
            func.sum(sub.c.seq - sub.c.previous - 1),
        )
        .where(is_gap)
        .group_by(sub.c.station_id)
    ).all()
    return {str(sid): GapSummary(int(n), int(missing)) for sid, n, missing in rows}
