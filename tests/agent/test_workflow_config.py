"""``[workflow]`` in the station configuration, and how ``__main__`` picks the workflow."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from agent.__main__ import build_workflow
from agent.config import parse_config
from agent.errors import ConfigError
from agent.fakes import FakeClock
from agent.outbox import TinyDbOutbox
from agent.ports import Scan, Signal
from agent.session import SamplingWorkflow, WorkflowSettings
from agent.station import RecordEveryScan
from tests.agent.people import PERSONS, Driver

BASE = 'station_id = "st-1"\n[scanner]\ntype = "stdin"\n'


def test_a_workflow_section_with_its_defaults() -> None:
    config = parse_config(BASE + "[workflow]\ntube_patterns = ['KG-RG-\\d{6}']\n")
    assert config.workflow is not None
    settings = WorkflowSettings.from_config(config.workflow)
    assert (settings.mode, settings.pool_size, settings.test_kind) == ("pool", 10, "rt_pcr")
    assert settings.retest_window_s == 86400
    assert settings.rules.person_formats == {"cccd", "health_qr"}
    assert settings.rules.cccd_strict_province is True
    assert settings.require_staff is False


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("", "workflow.tube_patterns: Field required"),
        ("tube_patterns = []", "workflow.tube_patterns"),
        ("tube_patterns = ['(']", "is not a regular expression"),
        ("tube_patterns = ['.*']", "matches an empty code"),
        ("tube_patterns = ['[A-Z:]+']", "matches command cards"),
        ("tube_patterns = ['T\\d+']\npool_size = 51", "workflow.pool_size"),
        ("tube_patterns = ['T\\d+']\nmode = 'double'", "workflow.mode"),
        ("tube_patterns = ['T\\d+']\nperson_formats = ['passport']", "workflow.person_formats"),
        ("tube_patterns = ['T\\d+']\nretest_window_s = -1", "workflow.retest_window_s"),
        ("tube_patterns = ['T\\d+']\npool = 5", "workflow.pool"),
    ],
)
def test_a_bad_workflow_section_names_the_key(section: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(BASE + "[workflow]\n" + section + "\n")


def test_main_builds_the_sampling_workflow_from_the_config() -> None:
    config = parse_config(
        BASE + "[workflow]\ntube_patterns = ['T-\\d{4}']\nmode = 'single'\ntest_kind = "
        "'rapid_antigen'\n"
    )
    workflow = build_workflow(config, FakeClock())
    assert isinstance(workflow, SamplingWorkflow)
    decision = workflow.decide(Scan("T-0001", "test"))
    assert decision.signal is Signal.POOL_OPENED
    assert decision.entries[0].data == {
        "tube": "T-0001",
        "mode": "single",
        "pool_size": 1,
        "test_kind": "rapid_antigen",
    }


def test_without_a_workflow_section_scans_are_recorded_raw_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        workflow = build_workflow(parse_config(BASE), FakeClock())
    assert isinstance(workflow, RecordEveryScan)
    assert "development only" in caplog.text


def test_the_outbox_keeps_a_session_history_apart_from_pending_records(tmp_path: Path) -> None:
    clock = FakeClock()
    config = parse_config(BASE + "[workflow]\ntube_patterns = ['T-\\d{4}']\n")
    assert config.workflow is not None
    settings = WorkflowSettings.from_config(config.workflow)
    d = Driver(SamplingWorkflow(settings, now=clock.wall), clock)
    for text in ("T-0001", PERSONS[0], PERSONS[1]):
        d.scan(text)
    with TinyDbOutbox(tmp_path / "outbox.json") as outbox:
        outbox.learn_seq_floor(0)  # as the server's Sync would
        for record in d.records:
            outbox.append(record)
        outbox.remember(d.records[:2])
        outbox.remember(d.records[1:])  # a seq already kept stays as it is
        assert [r.seq for r in outbox.remembered()] == [1, 2, 3]
        outbox.acknowledge([r.record_id for r in d.records])
        assert len(outbox) == 0
        assert [r.seq for r in outbox.remembered()] == [1, 2, 3]  # acks never touch it
        outbox.forget([2, 99])
        outbox.forget([])
    with TinyDbOutbox(tmp_path / "outbox.json") as outbox:  # durable
        outbox.learn_seq_floor(0)  # as the server's Sync would
        assert outbox.remembered() == [d.records[0], d.records[2]]
        assert outbox.last_seq() == 3
