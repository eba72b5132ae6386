"""The sample lifecycle and results: shared by ingest (records from stations) and the web app
(lab reception, result entry, corrections).

A tube's ``status`` only moves forward (``SampleStage`` order), whatever order the events arrive
in; its ``result`` is the current (not superseded) row of ``results``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, literal_column, or_, select, update
from sqlalchemy.orm import Session

from server.models import STAGE_RANK, Result, SampleEvent, SampleStage, Tube


def advance_status(stage: SampleStage) -> ColumnElement[str]:
    """SQL for ``tubes.status`` moved forward to ``stage`` (never backwards)."""
    earlier = [s.value for s in SampleStage if STAGE_RANK[s] < STAGE_RANK[stage]]
    if not earlier:
        return Tube.status  # type: ignore[return-value]
    # Literal values, not an IN (...) parameter list: the expression is used with executemany.
    before = or_(*(Tube.status == literal_column(f"'{value}'") for value in earlier))
    return case((before, literal_column(f"'{stage.value}'")), else_=Tube.status)


def record_event(
    session: Session,
    *,
    tube_id: int,
    kind: SampleStage,
    at: datetime,
    facility_id: int | None = None,
    station_id: str | None = None,
    record_id: str | None = None,
    user_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> SampleEvent:
    """Add a lifecycle event and move the tube's status forward.

    A ``received_at_lab`` event with a ``facility_id`` also sets the tube's lab.
    """
    if kind is SampleStage.OPEN:
        raise ValueError("'open' is a status, not an event")
    now = datetime.now(UTC)
    event = SampleEvent(
        tube_id=tube_id,
        kind=kind.value,
        at=at,
        recorded_at=now,
        facility_id=facility_id,
        station_id=station_id,
        record_id=record_id,
        user_id=user_id,
        details=details,
    )
    session.add(event)
    values: dict[str, Any] = {"status": advance_status(kind), "updated_at": now}
    if kind is SampleStage.RECEIVED_AT_LAB and facility_id is not None:
        values["lab_id"] = facility_id
    session.execute(update(Tube).where(Tube.id == tube_id).values(**values))
    return event


def lock_tube(session: Session, tube_id: int) -> None:
    """Make writers of one tube's results take turns, until the transaction ends.

    PostgreSQL locks the tube's row. SQLite has one writer at a time: a write now takes the
    database's write lock before the current result is read (a read first would see a state
    another writer may change before this one writes). The unique index
    ``uq_results_current_tube`` refuses a second current result should anything slip past.
    """
    lock_tubes(session, [tube_id])


def lock_tubes(session: Session, tube_ids: Sequence[int]) -> None:
    """``lock_tube`` for many tubes, in id order (two writers never wait for each other)."""
    ids = sorted(set(tube_ids))
    if not ids:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(
            update(Tube)
            .where(Tube.id == ids[0])
            .values(updated_at=Tube.updated_at)
            .execution_options(synchronize_session=False)
        )
        return
    for i in range(0, len(ids), 1000):
        session.execute(
            select(Tube.id)
            .where(Tube.id.in_(ids[i : i + 1000]))
            .order_by(Tube.id)
            .with_for_update()
        )


def current_result(session: Session, tube_id: int) -> Result | None:
    return session.scalars(
        select(Result)
        .where(Result.tube_id == tube_id, Result.superseded_at.is_(None))
        .with_for_update()
    ).first()


def add_result(
    session: Session,
    *,
    tube_id: int,
    value: str,
    source: str,
    reported_at: datetime,
    test_kind: str | None = None,
    facility_id: int | None = None,
    station_id: str | None = None,
    record_id: str | None = None,
    seq: int | None = None,
    entered_by: int | None = None,
    correction_reason: str | None = None,
) -> Result:
    """Add a result for a tube; the earlier current result, if any, is kept and superseded.

    Results from one station are ordered by their ``seq``: one that arrives after a later one
    from the same station (another ingest worker, a resend) is stored already superseded.
    A correction (there is a current result) should carry ``correction_reason``.
    """
    now = datetime.now(UTC)
    lock_tube(session, tube_id)
    current = current_result(session, tube_id)
    result = Result(
        tube_id=tube_id,
        value=value,
        test_kind=test_kind,
        source=source,
        facility_id=facility_id,
        station_id=station_id,
        record_id=record_id,
        seq=seq,
        entered_by=entered_by,
        reported_at=reported_at,
        entered_at=now,
        correction_reason=correction_reason,
    )
    late = (
        current is not None
        and seq is not None
        and current.station_id == station_id
        and current.seq is not None
        and current.seq > seq
    )
    if late:
        result.superseded_at = now
    elif current is not None:
        current.superseded_at = now
        result.supersedes_id = current.id
    session.add(result)
    session.flush()
    if not late:
        session.execute(update(Tube).where(Tube.id == tube_id).values(result=value, updated_at=now))
    # Every result reported is a lifecycle event, the current one or not.
    record_event(
        session,
        tube_id=tube_id,
        kind=SampleStage.RESULTED,
        at=reported_at,
        facility_id=facility_id,
        station_id=station_id,
        record_id=record_id,
        user_id=entered_by,
        details={"value": value, "source": source, "result_id": result.id},
    )
    return result
