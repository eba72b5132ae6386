"""``swabline admin enroll-token / decommission`` on a real database and broker: facilities are
looked up in the organisation tree by code, refusals are clear, every write is audited."""

from __future__ import annotations

import getpass
import stat
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import make_engine
from server.enrollment import enroll
from server.models import AuditEntry, StationRow
from swabline.broker import SERVER_USER, Broker
from swabline.cli import main
from tests.integration.harness import mqtt_connack

TREE_CSV = """code,name,kind,parent_code,facility_kind
HN,Hà Nội,province,,
HN-CG,Cầu Giấy,district,HN,
HN-CauGiay,Trạm Y tế Cầu Giấy,facility,HN-CG,sampling
HN-LAB,CDC Hà Nội,facility,HN,lab
"""


@pytest.fixture
def conf(tmp_path: Path, db_url: str, broker: Broker) -> Path:
    admin_secret = tmp_path / "broker-admin.secret"
    admin_secret.write_text(broker.admin_password)
    server_secret = tmp_path / "server.secret"
    server_secret.write_text(broker.users[SERVER_USER])
    path = tmp_path / "server.toml"
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'username = "{SERVER_USER}"\npassword_file = "{server_secret}"\n\n'
        f'[enrollment]\nbroker_host = "127.0.0.1"\nbroker_port = {broker.tls_port}\n'
        f'ca_file = "{broker.ca_file}"\nbroker_admin_password_file = "{admin_secret}"\n'
    )
    csv = tmp_path / "tree.csv"
    csv.write_text(TREE_CSV, encoding="utf-8")
    assert main(["admin", "--config", str(path), "import-orgs", str(csv)]) == 0
    return path


def admin(conf: Path, *args: str) -> int:
    return main(["admin", args[0], "--config", str(conf), *args[1:]])


@pytest.mark.parametrize(
    ("facility", "reason"),
    [
        ("HN-NOPE", "no facility with code 'HN-NOPE'"),
        ("HN-CG", "'HN-CG' is a district, not a facility"),
        ("HN-LAB", "'HN-LAB' is a lab, not a sampling facility"),
    ],
)
def test_tokens_are_refused_for_anything_but_a_sampling_facility(
    conf: Path, capsys: pytest.CaptureFixture[str], facility: str, reason: str
) -> None:
    capsys.readouterr()
    assert admin(conf, "enroll-token", "--facility", facility) == 1
    out = capsys.readouterr()
    assert out.out == "" and f"swabline admin enroll-token: {reason}" in out.err


def test_enroll_reprovision_and_decommission_from_the_command_line(
    conf: Path,
    db_url: str,
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    assert admin(conf, "enroll-token") == 2
    assert "give --facility CODE" in capsys.readouterr().err
    card = tmp_path / "card.html"
    assert (
        admin(
            conf,
            "enroll-token",
            "--facility",
            "hn-caugiay",  # the code in any letter case
            "--name",
            "Bàn 1",
            "--card",
            str(card),
            "--server-url",
            "https://swabline.soyte.example.vn",
        )
        == 0
    )
    out = capsys.readouterr()
    token = out.out.strip()
    assert "enrolls a new station (ids hn-caugiay-NN) for facility HN-CauGiay" in out.err
    assert stat.S_IMODE(card.stat().st_mode) == 0o600 and token in card.read_text()
    assert "Trạm Y tế Cầu Giấy (HN-CauGiay)" in card.read_text()
    engine = make_engine(db_url)
    try:
        done = enroll(engine, broker.admin, token=token)
        assert done.station_id == "hn-caugiay-01"
        with Session(engine) as db:
            station = db.get(StationRow, done.station_id)
            assert station is not None and station.name == "Bàn 1"

        assert admin(conf, "enroll-token", "--station", done.station_id) == 0
        assert f"re-provisions station {done.station_id}" in capsys.readouterr().err
        assert admin(conf, "decommission", "--station", done.station_id) == 0
        assert "the broker refuses its credentials" in capsys.readouterr().out
        assert mqtt_connack(broker.host, broker.port, done.station_id, done.mqtt_password) == (
            "Not authorized"
        )
        assert admin(conf, "enroll-token", "--station", done.station_id) == 1
        assert "enroll a new station instead" in capsys.readouterr().err
        assert admin(conf, "decommission", "--station", "hn-caugiay-99") == 1
        assert "no station 'hn-caugiay-99'" in capsys.readouterr().err
        with Session(engine) as db:
            entries = db.execute(
                select(AuditEntry.action, AuditEntry.actor)
                .where(AuditEntry.object_type.in_(["station", "enrollment_token"]))
                .order_by(AuditEntry.id)
            ).all()
    finally:
        engine.dispose()
    me = f"cli:{getpass.getuser()}"
    assert [tuple(e) for e in entries] == [
        ("enrollment_token.create", me),
        ("station.enroll", "enrollment-token:1"),
        ("enrollment_token.create", me),
        ("station.decommission", me),
    ]
