"""The EMQX deployment stays equivalent to the Mosquitto one the tests run against: the same
rules, the same password hashing, and enrollment managing station credentials through EMQX's
REST API (against a stand-in that implements those endpoints as EMQX 5 documents them)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from protocol.topics import StationTopic, topic
from server import orgs
from server.access import system_principal
from server.broker_admin import server_acls, station_acls
from server.config import ServerConfig, load_config
from server.db import make_engine, migrate
from server.emqx_admin import EmqxBrokerAdmin, station_rules
from server.enrollment import (
    broker_admin_from_config,
    create_token,
    decommission,
    enroll,
    sampling_facility,
)
from server.errors import BrokerAdminError, ConfigError, EnrollmentRefused
from server.models import OrgKind
from swabline.cli import main
from swabline.emqx import password_hash, users_csv
from tests.swabline.emqx_fake import FakeEmqxServer

BROKER = Path(__file__).resolve().parents[2] / "broker"


def _rules(acls: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(action, topic) that dynsec ACLs allow, in EMQX's terms: publishing and subscribing
    (EMQX has no check on delivery; a subscription allows it)."""
    actions = {
        "publishClientSend": "publish",
        "subscribeLiteral": "subscribe",
        "subscribePattern": "subscribe",
    }
    return {(actions[a["acltype"]], a["topic"]) for a in acls if a["acltype"] in actions}


def acl_conf_rules() -> set[tuple[str, str, str]]:
    """(who, action, topic) that broker/emqx/acl.conf allows."""
    rules: set[tuple[str, str, str]] = set()
    text = (BROKER / "emqx" / "acl.conf").read_text()
    for m in re.finditer(r'\{allow, (all|\{username, "([^"]+)"\}), (\w+), \[([^\]]*)\]\}\.', text):
        who = m.group(2) or "all"
        actions = ["publish", "subscribe"] if m.group(3) == "all" else [m.group(3)]
        for name in re.findall(r'"([^"]+)"', m.group(4)):
            for action in actions:
                rules.add((who, action, name))
    assert text.rstrip().endswith("{deny, all}.")
    return rules


def test_acl_conf_grants_the_server_what_its_mosquitto_role_grants_and_nobody_else_anything() -> (
    None
):
    server = {("swabline-server", a, t) for a, t in _rules(server_acls())}
    assert acl_conf_rules() == server
    assert ("swabline-server", "subscribe", "$share/+/swabline/v1/stations/#") in server


def test_a_station_s_emqx_rules_are_its_mosquitto_role_and_name_only_its_own_topics() -> None:
    rules = station_rules("st-1")
    assert {(r["action"], r["topic"]) for r in rules} == _rules(station_acls("st-1"))
    assert {r["permission"] for r in rules} == {"allow"}
    assert all("/st-1/" in r["topic"] for r in rules)
    assert ("publish", "swabline/v1/stations/st-1/records") in {
        (r["action"], r["topic"]) for r in rules
    }


def test_emqx_conf_asks_each_station_s_rules_then_the_file_and_denies_the_rest() -> None:
    conf = (BROKER / "emqx" / "emqx.conf").read_text()
    authz = conf[conf.index("authorization {") :]
    assert "no_match = deny" in authz
    assert authz.index("type = built_in_database") < authz.index("type = file")


def test_users_csv_hashes_each_password_as_emqx_config_says(tmp_path: Path) -> None:
    conf = (BROKER / "emqx" / "emqx.conf").read_text()
    assert re.search(r"name = pbkdf2\s+mac_fun = sha512\s+iterations = 4096\s+dk_length = 64", conf)
    creds = tmp_path / "stations.txt"
    creds.write_text("# province KG\nst-1 secret-one\n\nst-2 secret-two\n")
    out = tmp_path / "users.csv"
    assert main(["emqx-users", "--credentials", str(creds), "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["user_id"] for r in rows] == ["st-1", "st-2"]
    assert rows[0]["password_hash"] == password_hash("secret-one", rows[0]["salt"])
    assert rows[0]["password_hash"] != password_hash("secret-two", rows[0]["salt"])
    assert rows[0]["salt"] != rows[1]["salt"]
    assert {r["is_superuser"] for r in rows} == {"false"}
    assert out.stat().st_mode & 0o077 == 0


def test_users_csv_marks_superusers() -> None:
    rows = list(csv.DictReader(io.StringIO(users_csv([("ops", "pw")], superusers=["ops"]))))
    assert rows[0]["is_superuser"] == "true"


# --- enrollment on EMQX ---------------------------------------------------------------------

ROOT = system_principal("cli:tester")


@pytest.fixture
def emqx() -> Iterator[FakeEmqxServer]:
    with FakeEmqxServer() as server:
        yield server


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    with Session(eng) as db:
        province = orgs.create(
            db,
            ROOT,
            code="QN",
            name="Quảng Ninh",
            kind=OrgKind.PROVINCE,
            parent=None,
            facility_kind=None,
        )
        orgs.create(
            db,
            ROOT,
            code="QN-HL",
            name="Trạm Y tế Hạ Long",
            kind=OrgKind.FACILITY,
            parent=province,
            facility_kind="sampling",
        )
        db.commit()
    yield eng
    eng.dispose()


def emqx_config(tmp_path: Path, url: str, secret: str) -> ServerConfig:
    """A server configuration file as an EMQX deployment writes it: only [enrollment] differs."""
    secret_file = tmp_path / "emqx-api.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    path = tmp_path / "server.toml"
    path.write_text(
        "[enrollment]\n"
        'broker_host = "mqtt.province.example"\n'
        'broker_type = "emqx"\n'
        f'broker_api_url = "{url}"\n'
        'broker_admin_username = "swabline-enrollment"\n'
        f'broker_admin_password_file = "{secret_file}"\n'
    )
    return load_config(path)


def new_token(engine: Engine, *, station_id: str | None = None) -> str:
    with Session(engine) as db:
        facility = None if station_id else sampling_facility(db, ROOT, code="QN-HL")
        issued = create_token(
            db, ROOT, facility=facility, lifetime=timedelta(hours=1), station_id=station_id
        )
        db.commit()
        return issued.token


def test_enrollment_on_emqx_gives_a_station_a_user_and_only_its_own_topics(
    tmp_path: Path, engine: Engine, emqx: FakeEmqxServer
) -> None:
    broker = broker_admin_from_config(emqx_config(tmp_path, emqx.url, emqx.emqx.api_secret))
    fake = emqx.emqx
    a = enroll(engine, broker, token=new_token(engine))
    b = enroll(engine, broker, token=new_token(engine))
    assert (a.station_id, b.station_id) == ("qn-hl-01", "qn-hl-02")
    assert fake.connect(a.station_id, a.mqtt_password)
    assert not fake.connect(a.station_id, b.mqtt_password)
    assert fake.users[a.station_id]["is_superuser"] is False
    own, other = a.station_id, b.station_id
    assert fake.allowed(own, "publish", topic(own, StationTopic.RECORDS))
    assert fake.allowed(own, "subscribe", topic(own, StationTopic.ACKS))
    assert not fake.allowed(own, "publish", topic(other, StationTopic.RECORDS))
    assert not fake.allowed(own, "subscribe", topic(other, StationTopic.ACKS))
    assert not fake.allowed(own, "subscribe", topic(own, StationTopic.RECORDS))
    assert not fake.allowed(own, "publish", topic(own, StationTopic.ACKS))


def test_reprovisioning_on_emqx_changes_the_password_and_closes_the_old_session(
    tmp_path: Path, engine: Engine, emqx: FakeEmqxServer
) -> None:
    broker = broker_admin_from_config(emqx_config(tmp_path, emqx.url, emqx.emqx.api_secret))
    fake = emqx.emqx
    first = enroll(engine, broker, token=new_token(engine))
    sid = first.station_id
    assert fake.connect(sid, first.mqtt_password, client_id=sid)  # the station is online
    again = enroll(engine, broker, token=new_token(engine, station_id=sid))
    assert (again.station_id, again.reprovisioned) == (sid, True)
    assert sid not in fake.sessions  # EMQX keeps it; the adapter closed it
    assert not fake.connect(sid, first.mqtt_password)
    assert fake.connect(sid, again.mqtt_password)
    assert fake.allowed(sid, "publish", topic(sid, StationTopic.RECORDS))


def test_decommissioning_on_emqx_refuses_the_station_and_drops_its_session_and_rules(
    tmp_path: Path, engine: Engine, emqx: FakeEmqxServer
) -> None:
    broker = broker_admin_from_config(emqx_config(tmp_path, emqx.url, emqx.emqx.api_secret))
    fake = emqx.emqx
    done = enroll(engine, broker, token=new_token(engine))
    sid = done.station_id
    assert fake.connect(sid, done.mqtt_password, client_id=sid)
    with Session(engine) as db:
        assert decommission(db, ROOT, broker, sid)
        db.commit()
    assert not fake.connect(sid, done.mqtt_password)
    assert sid not in fake.sessions and sid not in fake.users and sid not in fake.rules
    assert not fake.allowed(sid, "publish", topic(sid, StationTopic.RECORDS))
    with Session(engine) as db:  # a second time: nothing left to remove, nothing fails
        assert not decommission(db, ROOT, broker, sid)


def test_a_wrong_api_secret_refuses_the_enrollment_and_leaves_the_token_usable(
    tmp_path: Path, engine: Engine, emqx: FakeEmqxServer
) -> None:
    token = new_token(engine)
    wrong = broker_admin_from_config(emqx_config(tmp_path, emqx.url, "not-the-secret"))
    with pytest.raises(EnrollmentRefused) as err:
        enroll(engine, wrong, token=token)
    assert err.value.status == 503
    assert "HTTP 401" in str(err.value) and "API key" in str(err.value)
    assert emqx.emqx.users == {} and emqx.emqx.rules == {}
    right = broker_admin_from_config(emqx_config(tmp_path, emqx.url, emqx.emqx.api_secret))
    assert enroll(engine, right, token=token).station_id == "qn-hl-01"


def test_an_unreachable_emqx_api_is_a_clear_broker_error() -> None:
    with FakeEmqxServer() as gone:
        url = gone.url
    with pytest.raises(BrokerAdminError, match="cannot reach the EMQX API"):  # noqa: SIM117
        with EmqxBrokerAdmin(api_url=url, api_key="k", api_secret="s", timeout_s=2) as admin:
            admin.put_station("qn-hl-01", "pw")


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ('broker_type = "emqx"\n', "broker_api_url is required when broker_type is 'emqx'"),
        (
            'broker_api_url = "https://emqx1:18083"\n',
            "broker_api_url is only used when broker_type is 'emqx'",
        ),
        ('broker_type = "emqx"\nbroker_api_url = "emqx1:18083"\n', "enrollment.broker_api_url"),
        ('broker_type = "vernemq"\n', "enrollment.broker_type"),
    ],
)
def test_the_broker_type_setting_refuses_what_cannot_work(
    tmp_path: Path, lines: str, problem: str
) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        '[enrollment]\nbroker_host = "mqtt.example"\nbroker_admin_password_file = "/x"\n' + lines
    )
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(path)


def test_emqx_users_writes_each_station_s_rules_for_the_import(tmp_path: Path) -> None:
    creds = tmp_path / "stations.txt"
    creds.write_text("st-1 one\nswabline-server srv\nst-2 two\n")
    rules = tmp_path / "rules.json"
    assert (
        main(
            [
                "emqx-users",
                "--credentials",
                str(creds),
                "--out",
                str(tmp_path / "u.csv"),
                "--rules-out",
                str(rules),
            ]
        )
        == 0
    )
    body = json.loads(rules.read_text())
    assert [entry["username"] for entry in body] == ["st-1", "st-2"]  # not the server's user
    assert body[0]["rules"] == station_rules("st-1")
