"""What records mean: project validated station records into persons, tubes, pool members,
staff, the sample lifecycle and results.

Called by ingest inside the transaction that inserts the raw records, with only the records that
were newly inserted, so a resent record projects nothing. Records of one station may arrive in
any order (several ingest workers, resends after a reconnect): every step here gives the same
end state whatever the order, e.g. an ``undo`` that lands before its ``person_added`` is kept in
``pool_undos`` and applied when the person arrives, and a tube is created by whichever record
names it first.

Work is done per kind in bulk statements (a few per batch, not per record), because ingest must
keep up with a mass-testing day.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, bindparam, case, insert, select, tuple_, update
from sqlalchemy.orm import Session

from protocol import Record
from protocol.events import (
    OnSiteResult,
    PersonAdded,
    PoolClosed,
    SignIn,
    TubeOpened,
    Undo,
)
from protocol.events import Person as PersonData
from server.db import upsert
from server.models import Person as PersonRow
from server.models import (
    PoolMember,
    PoolUndo,
    SampleEvent,
    SampleStage,
    Staff,
    StationRow,
    Tube,
    table,
)
from server.samples import add_result, advance_status

TUBES = table(Tube)
MEMBERS = table(PoolMember)
# Bulk statements go to the Core tables: executemany, no ORM bookkeeping.

CHUNK = 500
"""Rows per IN (...) list."""


@dataclass(frozen=True, slots=True)
class Projected:
    """A record whose ``data`` passed its kind's schema, with the typed data."""

    record: Record
    data: BaseModel
    received_at: datetime


def event_time(record: Record, received_at: datetime) -> datetime:
    """When it happened: the station's clock if it was synchronised, else when it arrived."""
    if record.clock_synced:
        try:
            return datetime.fromtimestamp(record.wall_time, UTC)
        except (OverflowError, OSError, ValueError):
            return received_at
    return received_at


def _tube_code(data: BaseModel) -> str | None:
    code = getattr(data, "tube", None)
    return code if isinstance(code, str) else None


def _clip(value: str | None, size: int) -> str | None:
    return value[:size] if value is not None else None


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def project(session: Session, engine: Engine, items: Sequence[Projected]) -> None:
    """Project newly stored records (any order, any stations) into the domain tables."""
    if not items:
        return
    now = datetime.now(UTC)
    items = sorted(items, key=lambda p: (p.record.station_id, p.record.seq))
    by_kind: dict[str, list[Projected]] = defaultdict(list)
    for p in items:
        by_kind[p.record.kind].append(p)
    stations = sorted({p.record.station_id for p in items})
    facility: dict[str, int | None] = {
        sid: fid
        for sid, fid in session.connection().execute(
            select(StationRow.station_id, StationRow.facility_id).where(
                StationRow.station_id.in_(stations)
            )
        )
    }
    # Bulk work on the Core connection: no ORM bookkeeping per statement.
    conn = session.connection()
    tubes = _ensure_tubes(conn, engine, items, facility, now)
    if by_kind["tube_opened"]:
        _tubes_opened(conn, by_kind["tube_opened"], tubes, facility, now)
    if by_kind["person_added"]:
        _persons_added(conn, engine, by_kind["person_added"], tubes, now)
    if by_kind["undo"]:
        _undos(conn, engine, by_kind["undo"])
    if by_kind["pool_closed"]:
        _pools_closed(conn, by_kind["pool_closed"], tubes, facility, now)
    for p in by_kind["result"]:
        data = p.data
        assert isinstance(data, OnSiteResult)
        add_result(
            session,
            tube_id=tubes[data.tube],
            value=data.result,
            source="station",
            reported_at=event_time(p.record, p.received_at),
            facility_id=facility.get(p.record.station_id),
            station_id=p.record.station_id,
            record_id=p.record.record_id,
            seq=p.record.seq,
        )
    if by_kind["sign_in"]:
        _signed_in(conn, engine, by_kind["sign_in"], facility)


def _ensure_tubes(
    conn: Connection,
    engine: Engine,
    items: Sequence[Projected],
    facility: dict[str, int | None],
    now: datetime,
) -> dict[str, int]:
    """Create every tube the records name (stubs for now), return code -> id."""
    first: dict[str, Projected] = {}
    for p in items:
        code = _tube_code(p.data)
        if code is not None and code not in first:
            first[code] = p
    if not first:
        return {}
    codes = sorted(first)
    rows = [
        {
            "code": code,
            "station_id": first[code].record.station_id,
            "facility_id": facility.get(first[code].record.station_id),
            "status": SampleStage.OPEN.value,
            "open_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        for code in codes
    ]
    conn.execute(upsert(engine, Tube).on_conflict_do_nothing(index_elements=["code"]), rows)
    out: dict[str, int] = {}
    for chunk in _chunks(codes):
        out.update(conn.execute(select(Tube.code, Tube.id).where(Tube.code.in_(chunk))).all())
    return out


def _tubes_opened(
    conn: Connection,
    items: Sequence[Projected],
    tubes: dict[str, int],
    facility: dict[str, int | None],
    now: datetime,
) -> None:
    counts: dict[int, int] = defaultdict(int)
    firsts: list[dict[str, Any]] = []
    for p in items:
        data = p.data
        assert isinstance(data, TubeOpened)
        tid = tubes[data.tube]
        counts[tid] += 1
        firsts.append(
            {
                "b_id": tid,
                "b_station": p.record.station_id,
                "b_facility": facility.get(p.record.station_id),
                "b_test_kind": data.test_kind,
                "b_mode": data.mode,
                "b_pool_size": data.pool_size,
                "b_staff": _clip(data.staff_id, 64),
                "b_at": event_time(p.record, p.received_at),
                "b_record": p.record.record_id,
            }
        )
    conn.execute(
        update(TUBES)
        .where(Tube.id == bindparam("b_id"))
        .values(open_count=Tube.open_count + bindparam("b_n"), updated_at=now),
        [{"b_id": tid, "b_n": n} for tid, n in sorted(counts.items())],
    )
    # The first opening describes the tube; a second one (reused label) only counts.
    conn.execute(
        update(TUBES)
        .where(Tube.id == bindparam("b_id"), Tube.opened_record_id.is_(None))
        .values(
            station_id=bindparam("b_station"),
            facility_id=bindparam("b_facility"),
            test_kind=bindparam("b_test_kind"),
            mode=bindparam("b_mode"),
            pool_size=bindparam("b_pool_size"),
            staff_code=bindparam("b_staff"),
            opened_at=bindparam("b_at"),
            opened_record_id=bindparam("b_record"),
        ),
        firsts,
    )


def _merge_person(old: PersonData | None, new: PersonData) -> PersonData:
    if old is None:
        return new
    fields = new.model_dump(exclude_none=True)
    if not new.name_reliable and old.name is not None and old.name_reliable:
        fields.pop("name", None)
        fields.pop("name_reliable", None)
    return old.model_copy(update=fields)


def _persons_added(
    conn: Connection,
    engine: Engine,
    items: Sequence[Projected],
    tubes: dict[str, int],
    now: datetime,
) -> None:
    persons: dict[tuple[str, str], PersonData] = {}
    for p in items:
        data = p.data
        assert isinstance(data, PersonAdded)
        key = (data.person.key_type, data.person.key)
        persons[key] = _merge_person(persons.get(key), data.person)
    ids = _upsert_persons(conn, engine, persons, now)
    rows = []
    for p in items:
        data = p.data
        assert isinstance(data, PersonAdded)
        rows.append(
            {
                "tube_id": tubes[data.tube],
                "person_id": ids[(data.person.key_type, data.person.key)],
                "position": data.position,
                "record_id": p.record.record_id,
                "station_id": p.record.station_id,
                "seq": p.record.seq,
                "retest": data.retest,
                "staff_code": _clip(data.staff_id, 64),
                "added_at": event_time(p.record, p.received_at),
            }
        )
    conn.execute(upsert(engine, PoolMember).on_conflict_do_nothing(), rows)
    # Undos that arrived before the person they take back.
    keys = [(p.record.station_id, p.record.seq) for p in items]
    pending: list[tuple[str, int, datetime, str]] = []
    for chunk in _chunks(keys):
        pending.extend(
            conn.execute(
                select(
                    PoolUndo.station_id,
                    PoolUndo.undone_seq,
                    PoolUndo.undone_at,
                    PoolUndo.undo_record_id,
                ).where(tuple_(PoolUndo.station_id, PoolUndo.undone_seq).in_(chunk))
            ).all()
        )
    if pending:
        _mark_undone(conn, [(sid, seq, at, rid) for sid, seq, at, rid in pending])


def _upsert_persons(
    conn: Connection, engine: Engine, persons: dict[tuple[str, str], PersonData], now: datetime
) -> dict[tuple[str, str], int]:
    stmt = upsert(engine, PersonRow)
    new = stmt.excluded
    take_name = (new.name.is_not(None)) & (
        new.name_reliable | PersonRow.name.is_(None) | ~PersonRow.name_reliable
    )
    set_: dict[str, Any] = {
        "name": case((take_name, new.name), else_=PersonRow.name),
        "name_reliable": case((take_name, new.name_reliable), else_=PersonRow.name_reliable),
        "last_seen_at": new.last_seen_at,
    }
    for col in ("birth_date", "sex", "address", "document_number", "old_id", "issue_date", "ext"):
        set_[col] = case((new[col].is_not(None), new[col]), else_=PersonRow.__table__.c[col])
    rows = [
        {
            "key_type": kt,
            "key": k,
            "name": d.name,
            "name_reliable": d.name_reliable,
            "birth_date": d.birth_date,
            "sex": d.sex,
            "address": d.address,
            "document_number": d.document_number,
            "old_id": d.old_id,
            "issue_date": d.issue_date,
            "ext": d.ext,
            "first_seen_at": now,
            "last_seen_at": now,
        }
        for (kt, k), d in sorted(persons.items())
    ]
    conn.execute(stmt.on_conflict_do_update(index_elements=["key_type", "key"], set_=set_), rows)
    ids: dict[tuple[str, str], int] = {}
    keys = sorted(persons)
    for chunk in _chunks(keys):
        for kt, k, pid in conn.execute(
            select(PersonRow.key_type, PersonRow.key, PersonRow.id).where(
                tuple_(PersonRow.key_type, PersonRow.key).in_(chunk)
            )
        ):
            ids[(kt, k)] = pid
    return ids


def _mark_undone(conn: Connection, undos: Sequence[tuple[str, int, datetime, str]]) -> None:
    conn.execute(
        update(MEMBERS)
        .where(
            PoolMember.station_id == bindparam("b_station"),
            PoolMember.seq == bindparam("b_seq"),
            PoolMember.undone_at.is_(None),
        )
        .values(undone_at=bindparam("b_at"), undo_record_id=bindparam("b_record")),
        [
            {"b_station": s, "b_seq": q, "b_at": at, "b_record": rid}
            for s, q, at, rid in sorted(undos)
        ],
    )


def _undos(conn: Connection, engine: Engine, items: Sequence[Projected]) -> None:
    rows: list[dict[str, Any]] = []
    undos: list[tuple[str, int, datetime, str]] = []
    for p in items:
        data = p.data
        assert isinstance(data, Undo)
        at = event_time(p.record, p.received_at)
        undos.append((p.record.station_id, data.undone_seq, at, p.record.record_id))
        rows.append(
            {
                "station_id": p.record.station_id,
                "undone_seq": data.undone_seq,
                "undo_record_id": p.record.record_id,
                "tube_code": data.tube,
                "person_key": data.person_key,
                "undone_at": at,
            }
        )
    # A second undo of the same seq (should not happen) is kept in records only.
    conn.execute(upsert(engine, PoolUndo).on_conflict_do_nothing(), rows)
    _mark_undone(conn, undos)


def _pools_closed(
    conn: Connection,
    items: Sequence[Projected],
    tubes: dict[str, int],
    facility: dict[str, int | None],
    now: datetime,
) -> None:
    closes: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    closed: set[int] = set()
    for p in items:
        data = p.data
        assert isinstance(data, PoolClosed)
        at = event_time(p.record, p.received_at)
        tid = tubes[data.tube]
        closed.add(tid)
        closes.append(
            {
                "b_id": tid,
                "b_at": at,
                "b_record": p.record.record_id,
                "b_reason": data.reason,
                "b_persons": data.persons,
            }
        )
        events.append(
            {
                "tube_id": tid,
                "kind": SampleStage.COLLECTED.value,
                "at": at,
                "recorded_at": now,
                "facility_id": facility.get(p.record.station_id),
                "station_id": p.record.station_id,
                "record_id": p.record.record_id,
                "details": {"persons": data.persons, "reason": data.reason},
            }
        )
    conn.execute(
        update(TUBES)
        .where(Tube.id == bindparam("b_id"), Tube.closed_record_id.is_(None))
        .values(
            closed_at=bindparam("b_at"),
            closed_record_id=bindparam("b_record"),
            close_reason=bindparam("b_reason"),
            persons_at_close=bindparam("b_persons"),
        ),
        closes,
    )
    conn.execute(
        update(TUBES)
        .where(Tube.id == bindparam("b_id"))
        .values(status=advance_status(SampleStage.COLLECTED), updated_at=now),
        [{"b_id": tid} for tid in sorted(closed)],
    )
    conn.execute(insert(table(SampleEvent)), events)


def _signed_in(
    conn: Connection, engine: Engine, items: Sequence[Projected], facility: dict[str, int | None]
) -> None:
    latest: dict[str, tuple[SignIn, Projected]] = {}
    for p in items:
        data = p.data
        assert isinstance(data, SignIn)
        latest[data.staff_id] = (data, p)
    stmt = upsert(engine, Staff)
    new = stmt.excluded
    rows = [
        {
            "staff_code": code,
            "name": data.staff_name,
            "facility_id": facility.get(p.record.station_id),
            "active": True,
            "first_seen_at": event_time(p.record, p.received_at),
            "last_seen_at": event_time(p.record, p.received_at),
            "last_station_id": p.record.station_id,
        }
        for code, (data, p) in sorted(latest.items())
    ]
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["staff_code"],
            set_={
                "name": case((new.name.is_not(None), new.name), else_=Staff.name),
                "facility_id": case(
                    (Staff.facility_id.is_(None), new.facility_id), else_=Staff.facility_id
                ),
                "last_seen_at": new.last_seen_at,
                "last_station_id": new.last_station_id,
            },
        ),
        rows,
    )
