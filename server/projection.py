"""What records mean: project validated station records into persons, tubes, pool members,
staff, the sample lifecycle and results.

Called by ingest inside the transaction that inserts the raw records, with only the records that
were newly inserted, so a resent record projects nothing. Records of one station may arrive in
any order (several ingest workers, resends after a reconnect): every step here gives the same
end state whatever the order, e.g. an ``undo`` that lands before its ``person_added`` is kept in
``pool_undos`` and applied when the person arrives, and a tube is created by whichever record
names it first.

Work is done per kind in bulk statements (a few per batch, not per record, see
``server/bulk.py``), because ingest must keep up with a mass-testing day. A tube that the
batch creates is inserted already opened and closed as its records say; only tubes that
existed before the batch are updated.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, case
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from protocol import Record
from protocol.events import (
    OnSiteResult,
    PersonAdded,
    PoolClosed,
    SignIn,
    TubeOpened,
    TubeReceived,
    Undo,
)
from protocol.events import Person as PersonData
from server.bulk import Bulk
from server.db import upsert
from server.lab import receive_from_stations
from server.models import Person as PersonRow
from server.models import (
    PoolMember,
    PoolUndo,
    SampleEvent,
    SampleStage,
    Staff,
    Tube,
    table,
)
from server.samples import add_result, advance_status

TUBES = table(Tube)
PERSONS = table(PersonRow)
MEMBERS = table(PoolMember)
UNDOS = table(PoolUndo)
EVENTS = table(SampleEvent)

_COLLECTED = str(
    advance_status(SampleStage.COLLECTED).compile(
        dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
)
"""``tubes.status`` moved forward to collected, as SQL both databases read."""


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


def project(session: Session, bulk: Bulk, items: Sequence[Projected], now: datetime) -> None:
    """Project newly stored records (any order, any stations) into the domain tables.

    ``bulk`` runs on ``session``'s connection (the same transaction); the rarer kinds go
    through the session.
    """
    if not items:
        return
    items = sorted(items, key=lambda p: (p.record.station_id, p.record.seq))
    by_kind: dict[str, list[Projected]] = defaultdict(list)
    for p in items:
        by_kind[p.record.kind].append(p)
    stations = sorted({p.record.station_id for p in items})
    cond, param = bulk.in_("station_id", stations)
    facility: dict[str, int | None] = {
        sid: fid
        for sid, fid in bulk.execute(
            f"SELECT station_id, facility_id FROM stations WHERE {cond}", [param]
        )
    }
    tubes = _tubes(bulk, items, facility, now)
    if by_kind["person_added"]:
        _persons_added(bulk, by_kind["person_added"], tubes, now)
    if by_kind["undo"]:
        _undos(bulk, by_kind["undo"])
    if by_kind["pool_closed"]:
        _collected(bulk, by_kind["pool_closed"], tubes, facility, now)
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
        _signed_in(session.connection(), session.get_bind(), by_kind["sign_in"], facility)
    if by_kind["tube_received"]:
        received = []
        for p in by_kind["tube_received"]:
            assert isinstance(p.data, TubeReceived)
            received.append((p.record, p.data, event_time(p.record, p.received_at)))
        receive_from_stations(session, received, facility)


@dataclass
class _Tube:
    """What one batch says about one tube code (its records in (station, seq) order)."""

    station_id: str | None
    """The sampling station: of the first record naming it, unless that came from a lab."""
    opening: Projected | None = None
    """The first ``tube_opened``: it describes the tube; later ones (a reused label) count."""
    opens: int = 0
    """Openings minus openings taken back (``undo`` with no person)."""
    closing: Projected | None = None
    """The first ``pool_closed``."""


TUBE_COLUMNS = (
    "code",
    "station_id",
    "facility_id",
    "status",
    "open_count",
    "test_kind",
    "mode",
    "pool_size",
    "staff_code",
    "opened_at",
    "opened_record_id",
    "closed_at",
    "closed_record_id",
    "close_reason",
    "persons_at_close",
    "created_at",
    "updated_at",
)


def _tubes(
    bulk: Bulk, items: Sequence[Projected], facility: dict[str, int | None], now: datetime
) -> dict[str, int]:
    """Create every tube the records name, open and close them; return code -> id.

    A tube new to the database is inserted with its openings and closing already applied;
    one that existed gets the same changes as updates: the first opening describes it (if
    nothing did before), every opening counts, the first closing closes it (if nothing did).
    """
    plans: dict[str, _Tube] = {}
    for p in items:
        code = _tube_code(p.data)
        if code is None:
            continue
        plan = plans.get(code)
        if plan is None:
            # A tube first heard of from a lab station belongs to no sampling site until its
            # own station's records arrive.
            sampling = p.record.station_id if p.record.kind != "tube_received" else None
            plan = plans[code] = _Tube(sampling)
        match p.record.kind:
            case "tube_opened":
                plan.opens += 1
                if plan.opening is None:
                    plan.opening = p
            case "undo":
                assert isinstance(p.data, Undo)
                if p.data.person_key is None:
                    # The tube's opening was taken back (it had no person): that opening does
                    # not count, so the station may open the label again without it showing as
                    # reused. A plain decrement commutes with the opening's increment, whatever
                    # order they arrive in.
                    plan.opens -= 1
            case "pool_closed":
                if plan.closing is None:
                    plan.closing = p
    if not plans:
        return {}
    at = bulk.ts(now)
    rows = [_tube_row(bulk, code, plan, facility, at) for code, plan in sorted(plans.items())]
    tubes = {
        code: int(tid)
        for tid, code in bulk.insert(
            TUBES, TUBE_COLUMNS, rows, on_conflict="(code) DO NOTHING", returning="id, code"
        )
    }
    existing = sorted(set(plans) - set(tubes))
    if existing:
        cond, param = bulk.in_("code", existing)
        found = bulk.execute(f"SELECT code, id FROM tubes WHERE {cond}", [param])
        before = {code: int(tid) for code, tid in found}
        _update_tubes(bulk, [(before[c], plans[c]) for c in existing], facility, at)
        tubes.update(before)
    return tubes


def _opening(p: Projected | None, facility: dict[str, int | None], bulk: Bulk) -> tuple[Any, ...]:
    """station_id, facility_id, test_kind, mode, pool_size, staff_code, opened_at, record."""
    if p is None:
        return (None,) * 8
    data = p.data
    assert isinstance(data, TubeOpened)
    sid = p.record.station_id
    return (
        sid,
        facility.get(sid),
        data.test_kind,
        data.mode,
        data.pool_size,
        _clip(data.staff_id, 64),
        bulk.ts(event_time(p.record, p.received_at)),
        p.record.record_id,
    )


def _closing(p: Projected | None, bulk: Bulk) -> tuple[Any, ...]:
    """closed_at, closed_record_id, close_reason, persons_at_close."""
    if p is None:
        return (None,) * 4
    data = p.data
    assert isinstance(data, PoolClosed)
    return (
        bulk.ts(event_time(p.record, p.received_at)),
        p.record.record_id,
        data.reason,
        data.persons,
    )


def _tube_row(
    bulk: Bulk, code: str, plan: _Tube, facility: dict[str, int | None], at: Any
) -> tuple[Any, ...]:
    sid, fid, *described = _opening(plan.opening, facility, bulk)
    if plan.opening is None:
        sid, fid = plan.station_id, facility.get(plan.station_id or "")
    status = SampleStage.COLLECTED if plan.closing is not None else SampleStage.OPEN
    return (
        code,
        sid,
        fid,
        status.value,
        plan.opens,
        *described,
        *_closing(plan.closing, bulk),
        at,
        at,
    )


def _update_tubes(
    bulk: Bulk, tubes: Sequence[tuple[int, _Tube]], facility: dict[str, int | None], at: Any
) -> None:
    tubes = sorted(tubes, key=lambda t: t[0])
    bulk.executemany(
        "UPDATE tubes SET open_count = open_count + ?, updated_at = ? WHERE id = ?",
        [(plan.opens, at, tid) for tid, plan in tubes if plan.opens],
    )
    bulk.executemany(
        "UPDATE tubes SET station_id = ?, facility_id = ?, test_kind = ?, mode = ?, "
        "pool_size = ?, staff_code = ?, opened_at = ?, opened_record_id = ? "
        "WHERE id = ? AND opened_record_id IS NULL",
        [(*_opening(plan.opening, facility, bulk), tid) for tid, plan in tubes if plan.opening],
    )
    closed = [(tid, plan) for tid, plan in tubes if plan.closing is not None]
    bulk.executemany(
        "UPDATE tubes SET closed_at = ?, closed_record_id = ?, close_reason = ?, "
        "persons_at_close = ? WHERE id = ? AND closed_record_id IS NULL",
        [(*_closing(plan.closing, bulk), tid) for tid, plan in closed],
    )
    bulk.executemany(
        f"UPDATE tubes SET status = {_COLLECTED}, updated_at = ? WHERE id = ?",
        [(at, tid) for tid, _ in closed],
    )


def _merge_person(old: PersonData | None, new: PersonData) -> PersonData:
    if old is None:
        return new
    fields = new.model_dump(exclude_none=True)
    if not new.name_reliable and old.name is not None and old.name_reliable:
        fields.pop("name", None)
        fields.pop("name_reliable", None)
    return old.model_copy(update=fields)


PERSON_FIELDS = ("birth_date", "sex", "address", "document_number", "old_id", "issue_date", "ext")
PERSON_COLUMNS = ("key_type", "key", "name", "name_reliable", *PERSON_FIELDS)
_TAKE_NAME = (
    "excluded.name IS NOT NULL AND "
    "(excluded.name_reliable OR persons.name IS NULL OR NOT persons.name_reliable)"
)
PERSON_UPSERT = (
    "(key_type, key) DO UPDATE SET "
    f"name = CASE WHEN {_TAKE_NAME} THEN excluded.name ELSE persons.name END, "
    f"name_reliable = CASE WHEN {_TAKE_NAME} THEN excluded.name_reliable "
    "ELSE persons.name_reliable END, "
    + "".join(f"{c} = COALESCE(excluded.{c}, persons.{c}), " for c in PERSON_FIELDS)
    + "last_seen_at = excluded.last_seen_at"
)
"""A later scan fills what was empty; a name from an unreliable scan (keyboard mode) never
replaces a reliable one."""
MEMBER_COLUMNS = (
    "tube_id",
    "person_id",
    "position",
    "record_id",
    "station_id",
    "seq",
    "retest",
    "staff_code",
    "added_at",
)


def _persons_added(
    bulk: Bulk, items: Sequence[Projected], tubes: dict[str, int], now: datetime
) -> None:
    persons: dict[tuple[str, str], PersonData] = {}
    for p in items:
        data = p.data
        assert isinstance(data, PersonAdded)
        key = (data.person.key_type, data.person.key)
        persons[key] = _merge_person(persons.get(key), data.person)
    at = bulk.ts(now)
    rows = [
        (kt, k, d.name, d.name_reliable, *(getattr(d, c) for c in PERSON_FIELDS), at, at)
        for (kt, k), d in sorted(persons.items())
    ]
    ids = {
        (kt, k): int(pid)
        for pid, kt, k in bulk.insert(
            PERSONS,
            (*PERSON_COLUMNS, "first_seen_at", "last_seen_at"),
            rows,
            on_conflict=PERSON_UPSERT,
            returning="id, key_type, key",
        )
    }
    members = []
    for p in items:
        data = p.data
        assert isinstance(data, PersonAdded)
        members.append(
            (
                tubes[data.tube],
                ids[(data.person.key_type, data.person.key)],
                data.position,
                p.record.record_id,
                p.record.station_id,
                p.record.seq,
                data.retest,
                _clip(data.staff_id, 64),
                bulk.ts(event_time(p.record, p.received_at)),
            )
        )
    bulk.insert(MEMBERS, MEMBER_COLUMNS, members, on_conflict="DO NOTHING")
    # Undos that arrived before the person they take back (usually none: one look-up in the
    # small pool_undos table, by its primary key).
    cond, params = bulk.pairs_in(
        ("station_id", "undone_seq"),
        [(p.record.station_id, p.record.seq) for p in items],
        ("text", "int8"),
    )
    _mark_undone(
        bulk,
        bulk.execute(
            "SELECT undone_at, undo_record_id, station_id, undone_seq FROM pool_undos "
            f"WHERE {cond}",
            params,
        ),
    )


def _mark_undone(bulk: Bulk, undos: Sequence[tuple[Any, ...]]) -> None:
    """Take back pool members: (undone_at, undo_record_id, station_id, seq) each."""
    bulk.executemany(
        "UPDATE pool_members SET undone_at = ?, undo_record_id = ? "
        "WHERE station_id = ? AND seq = ? AND undone_at IS NULL",
        sorted(undos, key=lambda m: (m[2], m[3])),
    )


UNDO_COLUMNS = (
    "station_id",
    "undone_seq",
    "undo_record_id",
    "tube_code",
    "person_key",
    "undone_at",
)


def _undos(bulk: Bulk, items: Sequence[Projected]) -> None:
    rows: list[tuple[Any, ...]] = []
    marks: list[tuple[Any, ...]] = []
    for p in items:
        data = p.data
        assert isinstance(data, Undo)
        at = bulk.ts(event_time(p.record, p.received_at))
        sid = p.record.station_id
        if data.person_key is not None:  # an opening taken back is counted in _tubes
            marks.append((at, p.record.record_id, sid, data.undone_seq))
        rows.append((sid, data.undone_seq, p.record.record_id, data.tube, data.person_key, at))
    # A second undo of the same seq (should not happen) is kept in records only.
    bulk.insert(UNDOS, UNDO_COLUMNS, rows, on_conflict="DO NOTHING")
    _mark_undone(bulk, marks)


EVENT_COLUMNS = (
    "tube_id",
    "kind",
    "at",
    "recorded_at",
    "facility_id",
    "station_id",
    "record_id",
    "details",
)


def _collected(
    bulk: Bulk,
    items: Sequence[Projected],
    tubes: dict[str, int],
    facility: dict[str, int | None],
    now: datetime,
) -> None:
    """A ``collected`` lifecycle event per ``pool_closed`` (the tube itself is closed in
    ``_tubes``)."""
    at = bulk.ts(now)
    rows = []
    for p in items:
        data = p.data
        assert isinstance(data, PoolClosed)
        rows.append(
            (
                tubes[data.tube],
                SampleStage.COLLECTED.value,
                bulk.ts(event_time(p.record, p.received_at)),
                at,
                facility.get(p.record.station_id),
                p.record.station_id,
                p.record.record_id,
                json.dumps({"persons": data.persons, "reason": data.reason}),
            )
        )
    bulk.insert(EVENTS, EVENT_COLUMNS, rows)


def _signed_in(
    conn: Connection, engine: Any, items: Sequence[Projected], facility: dict[str, int | None]
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
