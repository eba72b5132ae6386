"""Lab reception: boxes packed, shipped, received tube by tube (web scanner or lab station),
missing and unexpected tubes flagged, the lifecycle written once; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.db import make_engine, migrate
from server.errors import ConflictError
from server.lab import (
    ScanOutcome,
    close_batch,
    open_batch,
    pack_tube,
    receive_tube,
    ship,
    start_packing,
    start_reception,
    view,
)
from server.models import LabBatch, SampleEvent, Tube
from tests.server.world import PEOPLE, World, build_world


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    engine = make_engine(db_url)
    migrate(engine)
    yield build_world(engine)
    engine.dispose()


def events(engine: Engine, code: str) -> list[tuple[str, int | None]]:
    with Session(engine) as s:
        tube = s.scalars(select(Tube).where(Tube.code == code)).one()
        return [
            (e.kind, e.facility_id)
            for e in s.scalars(
                select(SampleEvent).where(SampleEvent.tube_id == tube.id).order_by(SampleEvent.id)
            )
        ]


def test_a_packed_box_is_shipped_and_received_with_missing_and_unexpected_tubes_flagged(
    world: World,
) -> None:
    for i, code in enumerate(("KG-RG-000001", "KG-RG-000002", "KG-RG-000003")):
        world.sample("st-1", code, [PEOPLE[i]])
    world.sample("st-2", "KG-PQ-000009", [PEOPLE[0]])
    with Session(world.engine) as s, s.begin():
        box = start_packing(s, code="BOX-7", origin_id=world.s1)
        assert pack_tube(s, box, "KG-RG-000001") is ScanOutcome.PACKED
        assert pack_tube(s, box, "KG-RG-000002") is ScanOutcome.PACKED
        assert pack_tube(s, box, "KG-RG-000003") is ScanOutcome.PACKED
        assert pack_tube(s, box, "KG-RG-000003") is ScanOutcome.ALREADY_PACKED
        assert ship(s, box, lab_id=world.lab) == 3
    assert events(world.engine, "KG-RG-000001") == [
        ("collected", world.s1),
        ("shipped", world.s1),
    ]
    assert world.tube("KG-RG-000001").status == "shipped"

    with Session(world.engine) as s, s.begin():
        box = start_reception(s, code="BOX-7", lab_id=world.lab, actor=world.lab_staff)
        scans = [
            receive_tube(s, tube_code=c, lab_id=world.lab, batch=box)
            for c in ("KG-RG-000001", "KG-PQ-000009", "KG-RG-000002", "KG-RG-000001", "NEW-1")
        ]
        assert scans == [
            ScanOutcome.RECEIVED,
            ScanOutcome.UNEXPECTED,
            ScanOutcome.RECEIVED,
            ScanOutcome.ALREADY_RECEIVED,
            ScanOutcome.UNEXPECTED,
        ]
        before_close = view(s, box)
        assert before_close.count("pending") == 1
        closed = close_batch(s, box)
        flags = {line.code: closed.flag(line) for line in closed.lines}
    assert flags == {
        "KG-RG-000001": "received",
        "KG-RG-000002": "received",
        "KG-RG-000003": "missing",
        "KG-PQ-000009": "unexpected",
        "NEW-1": "unexpected",
    }
    assert events(world.engine, "KG-RG-000001") == [
        ("collected", world.s1),
        ("shipped", world.s1),
        ("received_at_lab", world.lab),
    ]
    received = world.tube("KG-RG-000001")
    assert (received.status, received.lab_id) == ("received_at_lab", world.lab)
    assert world.tube("KG-RG-000003").status == "shipped"
    # The box label is free again for the next trip.
    with Session(world.engine) as s:
        assert open_batch(s, "BOX-7") is None


def test_a_box_nobody_packed_is_received_without_a_manifest(world: World) -> None:
    world.sample("st-1", "KG-RG-000010", [PEOPLE[0]])
    with Session(world.engine) as s, s.begin():
        box = start_reception(s, code="THUNG-3", lab_id=world.lab)
        assert receive_tube(s, tube_code="KG-RG-000010", lab_id=world.lab, batch=box) is (
            ScanOutcome.RECEIVED
        )
        # Samples that came before the sampling station's records: kept, flagged as unknown.
        assert receive_tube(s, tube_code="KG-RG-000011", lab_id=world.lab, batch=box) is (
            ScanOutcome.UNKNOWN_TUBE
        )
        closed = close_batch(s, box)
        assert [closed.flag(line) for line in closed.lines] == ["received", "received"]
        assert [line.known for line in closed.lines] == [True, False]
    # The station's records arrive later and complete the same tube.
    world.sample("st-1", "KG-RG-000011", [PEOPLE[1]])
    late = world.tube("KG-RG-000011")
    assert (late.status, late.facility_id, late.lab_id) == (
        "received_at_lab",
        world.s1,
        world.lab,
    )


def test_a_box_being_received_by_one_lab_is_refused_to_another(world: World) -> None:
    with Session(world.engine) as s, s.begin():
        start_reception(s, code="BOX-9", lab_id=world.lab)
    with Session(world.engine) as s, pytest.raises(ConflictError):
        start_reception(s, code="BOX-9", lab_id=world.s2)


def test_a_lab_station_receives_tubes_and_boxes_through_its_records(world: World) -> None:
    world.sample("st-1", "KG-RG-000020", [PEOPLE[0], PEOPLE[1]])
    world.sample("st-1", "KG-RG-000021", [PEOPLE[2]])
    with Session(world.engine) as s, s.begin():
        box = start_packing(s, code="BOX-1", origin_id=world.s1)
        pack_tube(s, box, "KG-RG-000020")
        pack_tube(s, box, "KG-RG-000021")
        ship(s, box, lab_id=world.lab)
    first = world.lab_scan("KG-RG-000020", batch="BOX-1")
    world.lab_scan("KG-RG-000099", batch="BOX-1")  # not on the manifest
    world.lab_scan("KG-RG-000030")  # no box scanned before it
    # A resend of the same record changes nothing.
    world.ingest([first])
    assert events(world.engine, "KG-RG-000020") == [
        ("collected", world.s1),
        ("shipped", world.s1),
        ("received_at_lab", world.lab),
    ]
    stub = world.tube("KG-RG-000099")
    assert (stub.status, stub.facility_id, stub.station_id, stub.lab_id) == (
        "received_at_lab",
        None,
        None,
        world.lab,
    )
    assert world.tube("KG-RG-000030").lab_id == world.lab
    with Session(world.engine) as s, s.begin():
        box2 = s.scalars(select(LabBatch).where(LabBatch.code == "BOX-1")).one()
        assert (box2.status, box2.station_id) == ("receiving", "lab-1")
        flags = {line.code: view(s, box2).flag(line) for line in view(s, box2).lines}
        assert flags == {
            "KG-RG-000020": "received",
            "KG-RG-000021": "pending",
            "KG-RG-000099": "unexpected",
        }
