"""``swabline inspect-code``: one JSON object per code; exit 0 accepted, 1 rejected."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from swabline.cli import main

REPO = Path(__file__).resolve().parents[2]
CCCD = "001090012345||Trần Văn An|01011990|Nam|Xã Cẩm Yên, H. Thạch Thất, Hà Nội|31052021"


def inspect(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["inspect-code", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_a_cccd_is_shown_as_a_person(capsys: pytest.CaptureFixture[str]) -> None:
    code, shown = inspect(capsys, CCCD)
    assert code == 0
    assert shown["kind"] == "person" and shown["format"] == "cccd"
    assert shown["person"] == {
        "key_type": "cccd",
        "key": "001090012345",
        "name": "Trần Văn An",
        "name_reliable": True,
        "birth_date": "1990-01-01",
        "sex": "male",
        "address": "Xã Cẩm Yên, H. Thạch Thất, Hà Nội",
        "document_number": "001090012345",
        "issue_date": "2021-05-31",
    }


def test_lossy_shows_what_a_keyboard_scanner_would_store(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, shown = inspect(capsys, "--lossy", CCCD)
    assert code == 0
    person = shown["person"]
    assert isinstance(person, dict)
    assert "name" not in person and person["name_reliable"] is False


def test_a_rejected_code_exits_1_with_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect(capsys, CCCD.replace("01011990", "30021990")) == (
        1,
        {"accepted": False, "reason": "impossible date of birth"},
    )
    assert inspect(capsys, "") == (1, {"accepted": False, "reason": "empty scan"})


def test_tubes_need_a_station_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect(capsys, "KG-RG-000123")[0] == 1
    example = str(REPO / "firmware_config" / "station.example.toml")
    code, shown = inspect(capsys, "--config", example, "KG-RG-000123")
    assert code == 0 and shown == {
        "accepted": True,
        "kind": "tube",
        "tube": "KG-RG-000123",
        "pattern": r"KG-RG-\d{6}",
    }
    code, shown = inspect(capsys, "--tube-pattern", r"LAB\d+", "LAB42")
    assert code == 0 and shown["kind"] == "tube"


def test_a_command_card(capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect(capsys, "SWABLINE:CMD:POOL:10") == (
        0,
        {"accepted": True, "kind": "command", "command": "pool_size", "pool_size": 10},
    )


def test_the_code_can_come_from_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CCCD.encode() + b"\n")))
    code, shown = inspect(capsys, "-")
    assert code == 0 and shown["kind"] == "person"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Nguy\xe1n|x\n")))
    assert inspect(capsys, "-") == (
        1,
        {"accepted": False, "reason": "invalid UTF-8 (replacement character)"},
    )


def test_a_bad_config_or_pattern_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "station.toml"
    bad.write_text(
        'station_id = "st-1"\n[scanner]\ntype = "stdin"\n[workflow]\ntube_patterns = ["("]\n'
    )
    assert main(["inspect-code", "--config", str(bad), "x"]) == 2
    assert "workflow.tube_patterns" in capsys.readouterr().err
    assert main(["inspect-code", "--tube-pattern", "(", "x"]) == 2


def test_the_installed_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "swabline", "inspect-code", "SWABLINE:CMD:CLOSE"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"accepted": True, "kind": "command", "command": "close"}
