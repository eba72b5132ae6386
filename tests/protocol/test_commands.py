"""Remote commands in the contract: every command's arguments, and the documentation of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import Command, CommandResult, PayloadError, decode, encode
from protocol.commands import COMMAND_ARGS, RESTART_EXIT_CODE, parse_args

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def _table(heading: str) -> set[str]:
    part = DOC.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", part, flags=re.M))


def test_command_and_result_tables_describe_every_field() -> None:
    assert _table("#### Command") == set(Command.model_fields)
    assert _table("#### CommandResult") == set(CommandResult.model_fields) | set(COMMAND_ARGS)


def test_every_command_is_documented_with_its_arguments() -> None:
    for name in COMMAND_ARGS:
        assert f"| `{name}` |" in DOC
    assert str(RESTART_EXIT_CODE) in DOC


def test_a_command_round_trips_and_its_args_are_checked() -> None:
    cmd = Command(command_id="c-1", name="identify", args={"duration_s": 5}, expires_at=2.0)
    assert decode(Command, encode(cmd)) == cmd
    assert parse_args("identify", cmd.args).model_dump() == {"duration_s": 5.0}
    assert parse_args("set_setting", {"test_kind": "rt_pcr"}).model_dump(exclude_none=True) == {
        "test_kind": "rt_pcr"
    }


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        ("reboot_everything", {}, "unknown command"),
        ("identify", {"duration_s": 601}, "duration_s"),
        ("set_setting", {}, "at least one"),
        ("set_setting", {"test_kind": "pcr"}, "test_kind"),
        ("restart", {"now": True}, "now"),
        ("diagnostics", {"log_lines": -1}, "log_lines"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(
    name: str, args: dict[str, object], reason: str
) -> None:
    with pytest.raises(PayloadError) as err:
        parse_args(name, args)
    assert reason in err.value.reason
