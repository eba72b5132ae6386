"""``swabline admin``: bootstrap, organisation CSV import (all or nothing), users, tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db import make_engine
from server.models import AuditEntry, Organisation, User
from swabline.cli import main

TREE_CSV = """\ufeffcode,name,kind,parent_code,facility_kind
HN-BD-TYT,Trạm Y tế Ba Đình,facility,HN-BD,sampling
HN,Hà Nội,province,,
HN-BD,Ba Đình,district,HN,
HN-LAB,CDC Hà Nội,facility,HN,lab
"""


@pytest.fixture
def conf(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'[database]\nurl = "{db_url}"\n')
    return path


def admin(conf: Path, *args: str) -> int:
    return main(["admin", "--config", str(conf), *args])


def orgs(conf: Path, db_url: str) -> list[tuple[str, str | None]]:
    engine = make_engine(db_url)
    with Session(engine) as db:
        rows = db.execute(select(Organisation.code, Organisation.path)).all()
        parent = {o.id: o.code for o in db.scalars(select(Organisation))}
        out = sorted(
            (code, parent[int(path.strip("/").split("/")[-2])] if path.count("/") > 2 else None)
            for code, path in rows
        )
    engine.dispose()
    return out


def test_import_builds_the_tree_and_importing_again_changes_nothing(
    conf: Path, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "tree.csv"
    csv.write_text(TREE_CSV, encoding="utf-8")
    assert admin(conf, "import-orgs", str(csv)) == 0
    assert "4 created, 0 updated, 0 unchanged" in capsys.readouterr().out
    assert orgs(conf, db_url) == [
        ("HN", None),
        ("HN-BD", "HN"),
        ("HN-BD-TYT", "HN-BD"),
        ("HN-LAB", "HN"),
    ]
    assert admin(conf, "import-orgs", str(csv)) == 0
    assert "0 created, 0 updated, 4 unchanged" in capsys.readouterr().out
    csv.write_text(TREE_CSV.replace("CDC Hà Nội", "CDC TP Hà Nội"), encoding="utf-8")
    assert admin(conf, "import-orgs", str(csv)) == 0
    assert "0 created, 1 updated, 3 unchanged" in capsys.readouterr().out
    engine = make_engine(db_url)
    with Session(engine) as db:
        actions = db.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions == ["organisation.create"] * 4 + ["organisation.update"]
        assert db.scalar(select(AuditEntry.actor)).startswith("cli")
    engine.dispose()


def test_a_bad_file_is_refused_whole_with_every_bad_row_named(
    conf: Path, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(
        TREE_CSV
        + "HN-X,Nowhere,facility,HN-ZZ,sampling\n"
        + "HN-BD,Again,district,HN,\n"
        + "HN-Y,Bad kind,clinic,HN,\n"
        + "HN-Z,No facility kind,facility,HN-BD,\n"
        + "HN-W,,district,HN,\n",
        encoding="utf-8",
    )
    assert admin(conf, "import-orgs", str(csv)) == 1
    err = capsys.readouterr().err
    assert "nothing imported" in err
    assert "row 7: code 'HN-BD' repeats row 4" in err
    assert "row 8: kind 'clinic'" in err
    assert "row 10: name is empty" in err
    assert orgs(conf, db_url) == []
    csv.write_text(
        TREE_CSV + "HN-X,Nowhere,facility,HN-ZZ,sampling\nHN-Z,No kind,facility,HN-BD,\n",
        encoding="utf-8",
    )
    assert admin(conf, "import-orgs", str(csv)) == 1
    err = capsys.readouterr().err
    assert "row 6: parent_code 'HN-ZZ' does not exist" in err
    assert "row 7: a facility needs facility_kind" in err
    assert orgs(conf, db_url) == []  # the valid rows were not applied either
    missing = tmp_path / "cols.csv"
    missing.write_text("code,name\nHN,Hà Nội\n", encoding="utf-8")
    assert admin(conf, "import-orgs", str(missing)) == 1
    assert "missing column(s) kind, parent_code, facility_kind" in capsys.readouterr().err


def test_bootstrap_creates_the_first_admin_once_and_tokens_work(
    conf: Path, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("a very long password\n")
    token_file = tmp_path / "token"
    args = [
        "bootstrap",
        "--username",
        "Admin",
        "--password-file",
        str(secret),
        "--province-code",
        "HN",
        "--province-name",
        "Hà Nội",
        "--token-file",
        str(token_file),
    ]
    assert admin(conf, *args) == 0
    assert "created provincial admin 'admin' for 'HN'" in capsys.readouterr().out
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text().startswith("swl_")
    assert admin(conf, *args) == 1
    assert "a provincial admin exists already" in capsys.readouterr().err
    assert admin(conf, "list-users") == 0
    listing = capsys.readouterr().out
    assert "admin" in listing and "provincial_admin@HN" in listing
    assert admin(conf, "create-token", "--username", "admin", "--name", "harness") == 0
    assert capsys.readouterr().out.startswith("swl_")
    assert admin(conf, "create-token", "--username", "ghost", "--name", "x") == 1
    engine = make_engine(db_url)
    with Session(engine) as db:
        user = db.scalars(select(User)).one()
        assert user.password_hash.startswith("$argon2id$")
        assert db.scalar(select(func.count()).select_from(Organisation)) == 1
    engine.dispose()
