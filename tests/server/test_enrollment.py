"""Enrollment tokens against a real broker (dynamic security) and both databases."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from server.broker_admin import DynsecBrokerAdmin
from server.enrollment import (
    BrokerAdminFactory,
    EnrollmentRefused,
    create_token,
    decommission,
    enroll,
    list_tokens,
    parse_lifetime,
)
from server.models import StationRow
from swabline.broker import Broker, free_port
from tests.integration.harness import mqtt_connack

HOUR = timedelta(hours=1)


def admin_of(broker: Broker) -> BrokerAdminFactory:
    return broker.admin


def refused(call: object) -> EnrollmentRefused:
    with pytest.raises(EnrollmentRefused) as err:
        call()  # type: ignore[operator]
    return err.value


def can_connect(broker: Broker, station: str, password: str) -> bool:
    return mqtt_connack(broker.host, broker.port, station, password) == "Success"


def test_a_token_enrolls_a_station_with_its_own_working_credentials(
    engine: Engine, broker: Broker
) -> None:
    first = create_token(engine, facility="hn-cau-giay", lifetime=2 * HOUR)
    second = create_token(engine, facility="hn-cau-giay", lifetime=2 * HOUR)
    a = enroll(engine, admin_of(broker), token=first.token, hostname="pi-a")
    b = enroll(engine, admin_of(broker), token=second.token)
    assert (a.station_id, b.station_id) == ("hn-cau-giay-01", "hn-cau-giay-02")
    assert a.mqtt_password != b.mqtt_password and len(a.mqtt_password) >= 40
    assert can_connect(broker, a.station_id, a.mqtt_password)
    assert not can_connect(broker, a.station_id, b.mqtt_password)
    with engine.connect() as c:  # only the hash is kept
        dump = " ".join(str(r) for r in c.execute(text("SELECT * FROM enrollment_tokens")))
    assert first.token not in dump and second.token not in dump
    assert [t.used_by_station for t in list_tokens(engine)] == ["hn-cau-giay-02", "hn-cau-giay-01"]


def test_used_expired_and_forged_tokens_are_refused_with_a_reason(
    engine: Engine, broker: Broker
) -> None:
    now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    used = create_token(engine, facility="kg", lifetime=HOUR, now=now)
    enroll(engine, admin_of(broker), token=used.token, now=now)
    again = refused(lambda: enroll(engine, admin_of(broker), token=used.token, now=now))
    assert again.status == 409
    assert "already used on 2026-11-26 08:00 UTC by station kg-01" in again.reason

    old = create_token(engine, facility="kg", lifetime=HOUR, now=now)
    late = now + HOUR + timedelta(seconds=1)
    expired = refused(lambda: enroll(engine, admin_of(broker), token=old.token, now=late))
    assert (expired.status, expired.reason) == (
        410,
        "this enrollment token expired on 2026-11-26 09:00 UTC: ask for a new one",
    )
    forged = refused(lambda: enroll(engine, admin_of(broker), token=old.token[:-1] + "x"))
    assert forged.status == 401 and "unknown enrollment token" in forged.reason
    with engine.connect() as c:  # refusals created nothing
        assert c.scalar(text("SELECT count(*) FROM station_enrollments")) == 1


def test_reprovisioning_keeps_the_id_and_revokes_the_old_password_at_once(
    engine: Engine, broker: Broker
) -> None:
    first = enroll(
        engine, admin_of(broker), token=create_token(engine, facility="hp", lifetime=HOUR).token
    )
    with Session(engine) as s, s.begin():  # the server already holds records 1..41
        s.add(StationRow(station_id=first.station_id, state="online", bd_seq=3, max_seq=41))
    token = create_token(engine, facility="hp", lifetime=HOUR, station_id=first.station_id)
    again = enroll(engine, admin_of(broker), token=token.token)
    assert again.station_id == first.station_id and again.reprovisioned
    assert again.seq_floor == 41
    assert not can_connect(broker, first.station_id, first.mqtt_password)
    assert can_connect(broker, first.station_id, again.mqtt_password)
    wrong = refused(
        lambda: create_token(engine, facility="kg", lifetime=HOUR, station_id=first.station_id)
    )
    assert "belongs to facility hp" in wrong.reason


def test_decommissioning_refuses_the_credentials_at_once_and_cancels_tokens(
    engine: Engine, broker: Broker
) -> None:
    done = enroll(
        engine, admin_of(broker), token=create_token(engine, facility="dn", lifetime=HOUR).token
    )
    pending = create_token(engine, facility="dn", lifetime=HOUR, station_id=done.station_id)
    decommission(engine, admin_of(broker), done.station_id)
    assert not can_connect(broker, done.station_id, done.mqtt_password)
    cancelled = refused(lambda: enroll(engine, admin_of(broker), token=pending.token))
    assert cancelled.status == 410 and "cancelled" in cancelled.reason
    gone = refused(
        lambda: create_token(engine, facility="dn", lifetime=HOUR, station_id=done.station_id)
    )
    assert gone.status == 410 and "enroll a new station instead" in gone.reason
    decommission(engine, admin_of(broker), done.station_id)  # twice is harmless


def test_when_the_broker_is_down_the_token_is_not_spent(engine: Engine, broker: Broker) -> None:
    issued = create_token(engine, facility="ct", lifetime=HOUR)

    def nowhere() -> DynsecBrokerAdmin:
        return DynsecBrokerAdmin(
            host="127.0.0.1", port=free_port(), username="swabline-admin", password="x", timeout_s=2
        )

    down = refused(lambda: enroll(engine, nowhere, token=issued.token))
    assert down.status == 503 and "try again" in down.reason
    done = enroll(engine, admin_of(broker), token=issued.token)
    assert done.station_id == "ct-01"


def test_a_token_raced_by_several_stations_enrolls_exactly_one(
    engine: Engine, broker: Broker
) -> None:
    issued = create_token(engine, facility="hue", lifetime=HOUR)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        try:
            result = enroll(engine, admin_of(broker), token=issued.token).station_id
        except EnrollmentRefused as exc:
            result = str(exc.status)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["409", "409", "409", "hue-01"]
    with engine.connect() as c:
        assert c.scalar(text("SELECT count(*) FROM station_enrollments")) == 1


@pytest.mark.parametrize(
    ("facility", "ok"),
    [("hn-cau-giay", True), ("a", True), ("HN", False), ("-x", False), ("swabline-x", False)],
)
def test_facility_codes_make_valid_station_ids(engine: Engine, facility: str, ok: bool) -> None:
    if ok:
        assert create_token(engine, facility=facility, lifetime=HOUR).facility == facility
    else:
        assert refused(lambda: create_token(engine, facility=facility, lifetime=HOUR)).status == 400


def test_lifetimes() -> None:
    assert parse_lifetime("2h") == 2 * HOUR and parse_lifetime("30m") == HOUR / 2
    assert parse_lifetime("1d") == 24 * HOUR
    assert "invalid lifetime" in refused(lambda: parse_lifetime("soon")).reason
