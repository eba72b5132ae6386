"""Enrollment tokens for facilities of the organisation tree, against a real broker (dynamic
security) and both databases: station ids, registry rows, audit rows, refusals."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from server import orgs
from server.access import Grant, Principal, system_principal
from server.broker_admin import DynsecBrokerAdmin
from server.enrollment import (
    EnrollmentRefused,
    IssuedToken,
    cancel_token,
    create_token,
    decommission,
    enroll,
    list_tokens,
    parse_lifetime,
    sampling_facility,
    station_prefix,
)
from server.errors import BadRequestError, ConflictError, HttpError, NotFoundError
from server.models import AuditEntry, Organisation, OrgKind, Role, StationRow
from swabline.broker import Broker, free_port
from tests.integration.harness import mqtt_connack

HOUR = timedelta(hours=1)
ROOT = system_principal("cli:tester")

# code, kind, parent, facility_kind
TREE = [
    ("QN", OrgKind.PROVINCE, None, None),
    ("QN-HL", OrgKind.DISTRICT, "QN", None),
    ("QN-HL.TYT_1", OrgKind.FACILITY, "QN-HL", "sampling"),
    ("QN-HL-BV", OrgKind.FACILITY, "QN-HL", "both"),
    ("QN-LAB", OrgKind.FACILITY, "QN", "lab"),
    ("Swabline", OrgKind.FACILITY, "QN", "sampling"),
]


@pytest.fixture
def org(engine: Engine) -> dict[str, int]:
    made: dict[str, Organisation] = {}
    with Session(engine) as db:
        for code, kind, parent, fk in TREE:
            made[code] = orgs.create(
                db,
                ROOT,
                code=code,
                name=f"Cơ sở {code}",
                kind=kind,
                parent=made.get(parent or ""),
                facility_kind=fk,
            )
        db.commit()
        return {code: o.id for code, o in made.items()}


def token_for(
    engine: Engine,
    code: str,
    *,
    lifetime: timedelta = HOUR,
    principal: Principal = ROOT,
    **kw: Any,
) -> IssuedToken:
    with Session(engine) as db:
        facility = sampling_facility(db, principal, code=code) if code else None
        issued = create_token(db, principal, facility=facility, lifetime=lifetime, **kw)
        db.commit()
        return issued


def refused(call: Callable[[], object]) -> HttpError:
    with pytest.raises(HttpError) as err:
        call()
    return err.value


def can_connect(broker: Broker, station: str, password: str) -> bool:
    return mqtt_connack(broker.host, broker.port, station, password) == "Success"


def audit_rows(engine: Engine) -> list[AuditEntry]:
    with Session(engine) as db:
        return list(db.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def test_a_token_enrolls_a_station_into_the_registry_with_working_credentials(
    engine: Engine, broker: Broker, org: dict[str, int]
) -> None:
    first = token_for(engine, "QN-HL.TYT_1")
    second = token_for(engine, "qn-hl.tyt_1", station_name="Bàn 2")  # any letter case
    a = enroll(engine, broker.admin, token=first.token, hostname="pi-a", remote_addr="10.0.0.7")
    b = enroll(engine, broker.admin, token=second.token)
    assert (a.station_id, b.station_id) == ("qn-hl-tyt-1-01", "qn-hl-tyt-1-02")
    assert a.facility == "QN-HL.TYT_1"
    assert a.mqtt_password != b.mqtt_password and len(a.mqtt_password) >= 40
    assert can_connect(broker, a.station_id, a.mqtt_password)
    assert not can_connect(broker, a.station_id, b.mqtt_password)
    with Session(engine) as db:
        rows = {s.station_id: s for s in db.scalars(select(StationRow))}
    assert {sid: (s.facility_id, s.name, s.active) for sid, s in rows.items()} == {
        "qn-hl-tyt-1-01": (org["QN-HL.TYT_1"], "Cơ sở QN-HL.TYT_1 01", True),
        "qn-hl-tyt-1-02": (org["QN-HL.TYT_1"], "Bàn 2", True),
    }
    with engine.connect() as c:  # only the hash is kept
        dump = " ".join(str(r) for r in c.execute(text("SELECT * FROM enrollment_tokens")))
        dump += " ".join(str(r) for r in c.execute(text("SELECT * FROM audit_log")))
    assert first.token not in dump and second.token not in dump
    with Session(engine) as db:
        assert [(t.used_by_station, t.state) for t in list_tokens(db, ROOT)] == [
            ("qn-hl-tyt-1-02", "used"),
            ("qn-hl-tyt-1-01", "used"),
        ]
    made = [e for e in audit_rows(engine) if e.object_type != "organisation"]
    assert [(e.action, e.actor, e.object_id) for e in made] == [
        ("enrollment_token.create", "cli:tester", str(first.id)),
        ("enrollment_token.create", "cli:tester", str(second.id)),
        ("station.enroll", f"enrollment-token:{first.id}", "qn-hl-tyt-1-01"),
        ("station.enroll", f"enrollment-token:{second.id}", "qn-hl-tyt-1-02"),
    ]
    enrolled = made[2]
    assert enrolled.before is None and enrolled.remote_addr == "10.0.0.7"
    assert enrolled.organisation_id == org["QN-HL.TYT_1"]
    assert enrolled.after is not None and enrolled.after["facility_id"] == org["QN-HL.TYT_1"]
    assert enrolled.after["enrollment"]["hostname"] == "pi-a"
    assert enrolled.after["token_id"] == first.id
    assert "token_sha256" not in (made[0].after or {})


def test_used_expired_and_forged_tokens_are_refused_with_a_reason(
    engine: Engine, broker: Broker, org: dict[str, int]
) -> None:
    now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    used = token_for(engine, "QN-HL-BV", now=now)
    enroll(engine, broker.admin, token=used.token, now=now)
    again = refused(lambda: enroll(engine, broker.admin, token=used.token, now=now))
    assert again.status == 409
    assert "already used on 2026-11-26 08:00 UTC by station qn-hl-bv-01" in again.message

    old = token_for(engine, "QN-HL-BV", now=now)
    late = now + HOUR + timedelta(seconds=1)
    expired = refused(lambda: enroll(engine, broker.admin, token=old.token, now=late))
    assert (expired.status, expired.message) == (
        410,
        "this enrollment token expired on 2026-11-26 09:00 UTC: ask for a new one",
    )
    forged = refused(lambda: enroll(engine, broker.admin, token=old.token[:-1] + "x"))
    assert forged.status == 401 and "unknown enrollment token" in forged.message
    with engine.connect() as c:  # refusals created nothing
        assert c.scalar(text("SELECT count(*) FROM station_enrollments")) == 1
        assert c.scalar(text("SELECT count(*) FROM stations")) == 1
        assert c.scalar(text("SELECT count(*) FROM audit_log WHERE action = 'station.enroll'")) == 1


def test_reprovisioning_keeps_the_id_and_revokes_the_old_password_at_once(
    engine: Engine, broker: Broker, org: dict[str, int]
) -> None:
    first = enroll(engine, broker.admin, token=token_for(engine, "QN-HL-BV").token)
    with Session(engine) as db, db.begin():  # the server already holds records 1..41
        station = db.get(StationRow, first.station_id)
        assert station is not None
        station.max_seq, station.active = 41, False
    token = token_for(engine, "", station_id=first.station_id, station_name="Xe lưu động")
    assert token.facility_id == org["QN-HL-BV"]
    again = enroll(engine, broker.admin, token=token.token)
    assert again.station_id == first.station_id and again.reprovisioned
    assert again.seq_floor == 41
    assert not can_connect(broker, first.station_id, first.mqtt_password)
    assert can_connect(broker, first.station_id, again.mqtt_password)
    with Session(engine) as db:
        station = db.get(StationRow, first.station_id)
        assert station is not None and (station.name, station.active) == ("Xe lưu động", True)
    (entry,) = [e for e in audit_rows(engine) if e.action == "station.reprovision"]
    assert entry.actor == f"enrollment-token:{token.id}"
    assert entry.before is not None and entry.after is not None
    assert entry.before["enrollment"]["credentials_generation"] == 1
    assert entry.after["enrollment"]["credentials_generation"] == 2
    wrong = refused(lambda: token_for(engine, "QN-HL.TYT_1", station_id=first.station_id))
    assert wrong.status == 400 and "belongs to facility QN-HL-BV" in wrong.message


def test_decommissioning_refuses_the_credentials_at_once_deactivates_and_cancels_tokens(
    engine: Engine, broker: Broker, org: dict[str, int]
) -> None:
    done = enroll(engine, broker.admin, token=token_for(engine, "QN-HL.TYT_1").token)
    pending = token_for(engine, "", station_id=done.station_id)
    with Session(engine) as db:
        assert decommission(db, ROOT, broker.admin, done.station_id, remote_addr="10.1.1.1")
        db.commit()
    assert not can_connect(broker, done.station_id, done.mqtt_password)
    cancelled = refused(lambda: enroll(engine, broker.admin, token=pending.token))
    assert cancelled.status == 410 and "cancelled" in cancelled.message
    gone = refused(lambda: token_for(engine, "", station_id=done.station_id))
    assert gone.status == 410 and "enroll a new station instead" in gone.message
    with Session(engine) as db:
        station = db.get(StationRow, done.station_id)
        assert station is not None and not station.active
        assert not decommission(db, ROOT, broker.admin, done.station_id)  # twice is harmless
        db.commit()
    (entry,) = [e for e in audit_rows(engine) if e.action == "station.decommission"]
    assert (entry.actor, entry.object_id, entry.remote_addr) == (
        "cli:tester",
        done.station_id,
        "10.1.1.1",
    )
    assert entry.before is not None and entry.after is not None
    assert (entry.before["active"], entry.after["active"]) == (True, False)
    assert entry.before["enrollment"]["decommissioned_at"] is None
    assert entry.after["enrollment"]["decommissioned_at"] is not None
    assert entry.after["tokens_cancelled"] == 1


def test_a_lost_card_is_cancelled_and_its_token_refused(
    engine: Engine, broker: Broker, org: dict[str, int]
) -> None:
    issued = token_for(engine, "QN-HL.TYT_1")
    with Session(engine) as db:
        assert cancel_token(db, ROOT, issued.id).state == "cancelled"
        assert cancel_token(db, ROOT, issued.id).state == "cancelled"  # twice is harmless
        db.commit()
        assert list_tokens(db, ROOT, outstanding=True) == []
    assert refused(lambda: enroll(engine, broker.admin, token=issued.token)).status == 410
    assert [e.action for e in audit_rows(engine)].count("enrollment_token.cancel") == 1
    used = token_for(engine, "QN-HL.TYT_1")
    enroll(engine, broker.admin, token=used.token)
    with Session(engine) as db:
        assert isinstance(refused(lambda: cancel_token(db, ROOT, used.id)), ConflictError)


def test_when_the_broker_is_down_the_token_is_not_spent(
    engine: Engine, broker: Broker, org: dict[str, int]
) -> None:
    issued = token_for(engine, "QN-HL.TYT_1")

    def nowhere() -> DynsecBrokerAdmin:
        return DynsecBrokerAdmin(
            host="127.0.0.1", port=free_port(), username="swabline-admin", password="x", timeout_s=2
        )

    down = refused(lambda: enroll(engine, nowhere, token=issued.token))
    assert down.status == 503 and "try again" in down.message
    with engine.connect() as c:
        assert c.scalar(text("SELECT count(*) FROM stations")) == 0
    assert enroll(engine, broker.admin, token=issued.token).station_id == "qn-hl-tyt-1-01"


def test_a_token_raced_by_several_stations_enrolls_exactly_one(
    engine: Engine, broker: Broker, org: dict[str, int]
) -> None:
    issued = token_for(engine, "QN-HL.TYT_1")
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        try:
            result = enroll(engine, broker.admin, token=issued.token).station_id
        except EnrollmentRefused as exc:
            result = str(exc.status)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["409", "409", "409", "qn-hl-tyt-1-01"]
    with engine.connect() as c:
        assert c.scalar(text("SELECT count(*) FROM station_enrollments")) == 1


def test_station_ids_skip_ids_taken_by_stations_registered_without_enrollment(
    engine: Engine, broker: Broker, org: dict[str, int]
) -> None:
    with Session(engine) as db, db.begin():
        db.add(StationRow(station_id="st-swabline-01", state="unknown", bd_seq=-1, max_seq=0))
    done = enroll(engine, broker.admin, token=token_for(engine, "Swabline").token)
    assert done.station_id == "st-swabline-02"  # never the broker's reserved 'swabline-'
    assert can_connect(broker, done.station_id, done.mqtt_password)


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("QN-NOPE", 404, "no facility with code 'QN-NOPE'"),
        ("QN-HL", 400, "'QN-HL' is a district, not a facility"),
        ("QN-LAB", 400, "'QN-LAB' is a lab, not a sampling facility"),
    ],
)
def test_tokens_are_only_for_sampling_facilities(
    engine: Engine, org: dict[str, int], code: str, status: int, reason: str
) -> None:
    problem = refused(lambda: token_for(engine, code))
    assert (problem.status, problem.message.split(":")[0]) == (status, reason)


def test_deactivated_facilities_and_lifetimes_are_refused(
    engine: Engine, org: dict[str, int]
) -> None:
    with Session(engine) as db:
        facility = db.get(Organisation, org["QN-HL-BV"])
        assert facility is not None
        orgs.change(db, ROOT, facility, orgs.OrgChange(active=False))
        db.commit()
    assert isinstance(refused(lambda: token_for(engine, "QN-HL-BV")), ConflictError)
    too_long = refused(lambda: token_for(engine, "QN-HL.TYT_1", lifetime=timedelta(days=8)))
    assert isinstance(too_long, BadRequestError) and "between 1 second" in too_long.message


def test_a_technician_cannot_enroll_outside_their_scope(
    engine: Engine, org: dict[str, int]
) -> None:
    with Session(engine) as db:
        path = db.get(Organisation, org["QN-HL-BV"]).path  # type: ignore[union-attr]
    tech = Principal(
        user_id=None, username="tech", grants=(Grant(Role.TECHNICIAN, 0, path, False),)
    )
    staff = Principal(
        user_id=None, username="staff", grants=(Grant(Role.SAMPLING_STAFF, 0, path, False),)
    )
    assert token_for(engine, "QN-HL-BV", principal=tech).facility_code == "QN-HL-BV"
    assert isinstance(
        refused(lambda: token_for(engine, "QN-HL.TYT_1", principal=tech)), NotFoundError
    )
    assert refused(lambda: token_for(engine, "QN-HL-BV", principal=staff)).status == 403


@pytest.mark.parametrize(
    ("code", "prefix"),
    [
        ("HN-CG.TYT_2", "hn-cg-tyt-2"),
        ("KG", "kg"),
        ("a--b__c", "a-b-c"),
        ("Swabline", "st-swabline"),
        ("SWABLINE-X", "st-swabline-x"),
        ("SwablineX", "swablinex"),
    ],
)
def test_station_prefixes_are_derived_from_organisation_codes(code: str, prefix: str) -> None:
    assert station_prefix(code) == prefix


def test_lifetimes() -> None:
    assert parse_lifetime("2h") == 2 * HOUR and parse_lifetime("30m") == HOUR / 2
    assert parse_lifetime("1d") == 24 * HOUR
    assert "invalid lifetime" in refused(lambda: parse_lifetime("soon")).message
