"""Records from stations become persons, tubes, pools, lifecycle events and results, exactly once
and whatever order they arrive in, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from protocol import Record
from server.db import make_engine, migrate
from server.ingest import classify, store_batch, store_resilient
from server.models import (
    Person,
    PoolMember,
    RecordRow,
    RejectedMessage,
    Result,
    SampleEvent,
    Staff,
    StationRow,
    Tube,
)
from tests.server.factories import message, person, pool_session, record


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


def ingest(engine: Engine, records: list[Record]) -> Any:
    return store_resilient(engine, classify([message(r) for r in records]))


def state(engine: Engine) -> dict[str, Any]:
    """Everything the projection derives, without ids and server timestamps."""
    with Session(engine) as s:
        persons = sorted(
            (p.key_type, p.key, p.name, p.name_reliable, p.birth_date, p.address)
            for p in s.scalars(select(Person))
        )
        tubes = sorted(
            (
                t.code,
                t.station_id,
                t.status,
                t.result,
                t.open_count,
                t.test_kind,
                t.mode,
                t.pool_size,
                t.opened_record_id,
                t.closed_record_id,
                t.close_reason,
                t.persons_at_close,
                t.opened_at,
                t.closed_at,
            )
            for t in s.scalars(select(Tube))
        )
        members = sorted(
            (
                t.code,
                p.key,
                m.position,
                m.station_id,
                m.seq,
                m.undone_at is not None,
                m.undo_record_id,
            )
            for m, t, p in s.execute(
                select(PoolMember, Tube, Person)
                .join(Tube, Tube.id == PoolMember.tube_id)
                .join(Person, Person.id == PoolMember.person_id)
            ).all()
        )
        events = sorted(
            (t.code, e.kind, e.at, e.record_id)
            for e, t in s.execute(select(SampleEvent, Tube).join(Tube)).all()
        )
        results = sorted(
            (t.code, r.value, r.seq, r.superseded_at is None)
            for r, t in s.execute(select(Result, Tube).join(Tube)).all()
        )
        stations = sorted(
            (st.station_id, st.max_seq, st.record_count) for st in s.scalars(select(StationRow))
        )
        return {
            "persons": persons,
            "tubes": tubes,
            "members": members,
            "events": events,
            "results": results,
            "stations": stations,
            "records": s.scalar(select(func.count()).select_from(RecordRow)),
        }


def test_a_pool_session_becomes_a_tube_with_its_persons_and_lifecycle(engine: Engine) -> None:
    records = pool_session(
        "st-1", "KG-RG-000123", ["079303001234", "001090012345", "001090099999"], undo=2
    )
    records.append(record("st-1", 7, "result", {"tube": "KG-RG-000123", "result": "negative"}))
    stored = ingest(engine, records)
    assert stored.inserted == 7 and stored.duplicates == 0
    assert sorted(stored.acks["st-1"]) == sorted(r.record_id for r in records)
    with Session(engine) as s:
        tube = s.scalars(select(Tube)).one()
        assert (tube.code, tube.status, tube.result) == ("KG-RG-000123", "resulted", "negative")
        assert (tube.mode, tube.pool_size, tube.test_kind) == ("pool", 10, "rt_pcr")
        assert tube.persons_at_close == 2 and tube.close_reason == "card" and tube.open_count == 1
        members = s.execute(
            select(Person.key, PoolMember.position, PoolMember.undone_at)
            .join(Person)
            .order_by(PoolMember.position)
        ).all()
        assert [(k, pos, at is not None) for k, pos, at in members] == [
            ("079303001234", 1, False),
            ("001090012345", 2, True),
            ("001090099999", 3, False),
        ]
        kinds = s.scalars(select(SampleEvent.kind).order_by(SampleEvent.id)).all()
        assert kinds == ["collected", "resulted"]
        assert s.scalar(select(StationRow.max_seq)) == 7
        assert s.scalar(select(StationRow.record_count)) == 7


def test_a_resent_batch_is_acknowledged_again_and_projects_nothing(engine: Engine) -> None:
    records = pool_session("st-1", "T-1", ["079303001234", "001090012345"], undo=1)
    first = ingest(engine, records)
    before = state(engine)
    again = ingest(engine, records)
    assert again.inserted == 0 and again.duplicates == len(records)
    assert again.acks == first.acks
    assert state(engine) == before
    # A resend inside one batch is stored once too.
    more = pool_session("st-1", "T-2", ["001090077777"], start=len(records) + 1)
    twice = ingest(engine, more + more)
    assert twice.inserted == len(more) and twice.duplicates == len(more)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(PoolMember)) == 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_arrival_order_gives_the_same_result(db_url: str, seed: int, tmp_path: Any) -> None:
    records = pool_session("st-1", "T-1", ["079303001234", "001090012345", "001090099999"], undo=3)
    records += pool_session("st-2", "T-2", ["079303001234"], start=1)
    records.append(record("st-2", 4, "result", {"tube": "T-2", "result": "positive"}))
    records.append(record("st-2", 5, "result", {"tube": "T-2", "result": "negative"}))
    in_order = make_engine(f"sqlite:///{tmp_path / 'ordered.db'}")
    migrate(in_order)
    ingest(in_order, records)
    expected = state(in_order)
    in_order.dispose()

    shuffled = make_engine(db_url)
    migrate(shuffled)
    rng = random.Random(seed)
    order = records[:]
    rng.shuffle(order)
    i = 0
    while i < len(order):  # batches of random sizes, like several workers would commit
        n = rng.randint(1, 3)
        ingest(shuffled, order[i : i + n])
        i += n
    assert state(shuffled) == expected
    with Session(shuffled) as s:  # the later result (higher seq) is the current one
        assert s.scalar(select(Tube.result).where(Tube.code == "T-2")) == "negative"
    shuffled.dispose()


def test_an_undo_that_arrives_before_its_person_still_applies(engine: Engine) -> None:
    records = pool_session("st-1", "T-1", ["079303001234", "001090012345"], undo=2)
    undo = next(r for r in records if r.kind == "undo")
    ingest(engine, [undo])
    ingest(engine, [r for r in records if r is not undo])
    with Session(engine) as s:
        rows = s.execute(select(PoolMember.seq, PoolMember.undone_at)).all()
    assert sorted((seq, at is not None) for seq, at in rows) == [(2, False), (3, True)]


def test_a_later_scan_completes_a_person_but_a_mangled_name_never_replaces_a_good_one(
    engine: Engine,
) -> None:
    def added(seq: int, p: dict[str, Any]) -> Record:
        return record("st-1", seq, "person_added", {"tube": "T-1", "person": p, "position": seq})

    ingest(engine, [added(1, person("079303001234", "Nguyễn Thị Bình"))])
    ingest(
        engine,
        [
            added(
                2,
                person(
                    "079303001234",
                    "Nguy?n Th? B?nh",
                    name_reliable=False,
                    birth_date="2003-08-15",
                    address="12 Lê Lợi",
                ),
            )
        ],
    )
    with Session(engine) as s:
        p = s.scalars(select(Person)).one()
        assert (p.name, p.name_reliable) == ("Nguyễn Thị Bình", True)
        assert (p.birth_date, p.address) == ("2003-08-15", "12 Lê Lợi")


def test_a_label_opened_twice_is_one_tube_flagged_by_its_open_count(engine: Engine) -> None:
    opened = {"tube": "T-1", "mode": "single", "pool_size": 1, "test_kind": "rapid_antigen"}
    ingest(engine, [record("st-1", 1, "tube_opened", opened)])
    ingest(engine, [record("st-2", 1, "tube_opened", {**opened, "mode": "pool", "pool_size": 5})])
    with Session(engine) as s:
        tube = s.scalars(select(Tube)).one()
    assert (tube.open_count, tube.station_id, tube.mode) == (2, "st-1", "single")


def test_sign_in_makes_staff_known(engine: Engine) -> None:
    ingest(engine, [record("st-1", 1, "sign_in", {"staff_id": "NV-001", "staff_name": "Lan"})])
    ingest(engine, [record("st-2", 1, "sign_in", {"staff_id": "NV-001"})])
    with Session(engine) as s:
        staff = s.scalars(select(Staff)).one()
    assert (staff.staff_code, staff.name, staff.last_station_id) == ("NV-001", "Lan", "st-2")


def test_invalid_data_or_unknown_kind_is_kept_with_the_reason_and_acknowledged_once(
    engine: Engine,
) -> None:
    bad_data = record("st-1", 1, "tube_opened", {"tube": "T-1"})
    unknown = record("st-1", 2, "teleport", {"where": "moon"})
    good = record("st-1", 3, "scan", code="HELLO")
    stored = ingest(engine, [bad_data, unknown, good])
    assert sorted(stored.acks["st-1"]) == sorted(r.record_id for r in (bad_data, unknown, good))
    assert (stored.inserted, stored.invalid) == (1, 2)
    with Session(engine) as s:
        rows = s.execute(
            select(RejectedMessage.record_id, RejectedMessage.seq, RejectedMessage.reason).order_by(
                RejectedMessage.seq
            )
        ).all()
        assert [(rid, seq) for rid, seq, _ in rows] == [
            (bad_data.record_id, 1),
            (unknown.record_id, 2),
        ]
        assert "tube_opened data.mode: Field required" in rows[0][2]
        assert "unknown record kind 'teleport'" in rows[1][2]
        assert s.scalars(select(RecordRow.seq)).all() == [3]
    again = ingest(engine, [bad_data, unknown])
    assert again.invalid == 0 and again.duplicates == 2
    assert sorted(again.acks["st-1"]) == sorted([bad_data.record_id, unknown.record_id])
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(RejectedMessage)) == 2


def test_a_record_the_database_refuses_is_kept_and_the_rest_of_the_batch_is_stored(
    engine: Engine,
) -> None:
    # The contract allows any positive seq; no database column holds one beyond 64 bits.
    poison = record("st-1", 2**63, "scan", code="TOO-FAR")
    fine = [record("st-1", i, "scan", code=f"C{i}") for i in (1, 2, 3)]
    stored = ingest(engine, [fine[0], poison, fine[1], fine[2]])
    assert stored.inserted == 3 and stored.poison == 1
    assert poison.record_id in stored.acks["st-1"]
    with Session(engine) as s:
        reason = s.scalar(
            select(RejectedMessage.reason).where(RejectedMessage.record_id == poison.record_id)
        )
        assert reason is not None and reason.startswith("database refused it")
        assert s.scalar(select(func.count()).select_from(RecordRow)) == 3


def test_births_and_deaths_never_let_a_stale_death_win(engine: Engine) -> None:
    from tests.server.factories import raw

    def status(state: str, bd: int) -> Any:
        return raw("st-1", {"v": 1, "state": state, "bd_seq": bd, "time": 1.0}, "status")

    def current() -> tuple[str, int]:
        with Session(engine) as s:
            row = s.get(StationRow, "st-1")
            assert row is not None
            return row.state, row.bd_seq

    store_batch(engine, classify([status("online", 5)]))
    assert current() == ("online", 5)
    # Connection 5 dropped silently, 6 came up, then 5's will arrived late.
    stored = store_batch(engine, classify([status("online", 6), status("offline", 5)]))
    assert current() == ("online", 6) and stored.stale_deaths == 1
    # The same, split over two "workers" that commit in either order.
    store_batch(engine, classify([status("offline", 5)]))
    assert current() == ("online", 6)
    store_batch(engine, classify([status("offline", 6)]))
    assert current() == ("offline", 6)
    # A reinstalled station restarts its counter: its birth wins.
    store_batch(engine, classify([status("online", 0)]))
    assert current() == ("online", 0)
