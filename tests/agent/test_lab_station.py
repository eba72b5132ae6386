"""The lab reception workflow: boxes open and close, tubes become ``tube_received`` records,
duplicates and junk are refused; the station loop stores and sends what it decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import parse_config
from agent.errors import ConfigError
from agent.fakes import FakeClock, FakeUplink, RecordingFeedback
from agent.lab import LabReception
from agent.outbox import TinyDbOutbox
from agent.ports import Scan, Signal
from agent.station import Station
from protocol.events import DATA_MODELS

TUBES = [r"KG-[A-Z]{2}-\d{6}"]
BOXES = [r"BOX-\d{3}"]


def lab() -> LabReception:
    return LabReception(tube_patterns=TUBES, box_patterns=BOXES)


def decide(workflow: LabReception, *codes: str) -> list[tuple[Signal, list[tuple[str, object]]]]:
    out = []
    for code in codes:
        d = workflow.decide(Scan(text=code, source="test"))
        out.append((d.signal, [(e.kind, e.data) for e in d.entries]))
    return out


def test_boxes_frame_the_tubes_received_in_them() -> None:
    w = lab()
    assert decide(
        w, "KG-RG-000001", "BOX-001", "KG-RG-000002", "KG-RG-000002", "BOX-001", "KG-RG-000002"
    ) == [
        (Signal.SAVED, [("tube_received", {"tube": "KG-RG-000001"})]),
        (Signal.POOL_OPENED, []),
        (Signal.SAVED, [("tube_received", {"tube": "KG-RG-000002", "batch": "BOX-001"})]),
        (Signal.DUPLICATE, []),
        (Signal.POOL_CLOSED, []),
        (Signal.SAVED, [("tube_received", {"tube": "KG-RG-000002"})]),
    ]
    assert decide(w, "079303001234||Nguyễn Thị Bình|15082003|Nữ|x|20042021") == [
        (
            Signal.REJECTED,
            [("scan_rejected", {"reason": "not a tube or box label", "signal": "rejected"})],
        ),
    ]
    assert decide(w, "BOX-002", "BOX-003")[1][0] is Signal.POOL_OPENED
    assert w.box == "BOX-003"


def test_every_entry_is_valid_under_the_contract() -> None:
    w = lab()
    for _signal, entries in decide(w, "BOX-001", "KG-RG-000001", "junk"):
        for kind, data in entries:
            DATA_MODELS[kind].model_validate(data)


def test_the_station_loop_saves_sends_and_restores_the_open_box(tmp_path: Path) -> None:
    uplink, feedback = FakeUplink(), RecordingFeedback()
    with TinyDbOutbox(tmp_path / "outbox.json") as outbox:
        outbox.learn_seq_floor(0)  # as the server's Sync would
        station = Station(
            station_id="lab-1",
            boot_id="boot-1",
            sources=[],
            workflow=lab(),
            outbox=outbox,
            uplink=uplink,
            feedback=feedback,
            clock=FakeClock(),
        )
        uplink.start(station.handle)
        for code in ("BOX-007", "KG-RG-000010", "KG-RG-000011"):
            station.handle(Scan(text=code, source="test"))
        assert feedback.signals == [Signal.POOL_OPENED, Signal.SAVED, Signal.SAVED]
        assert [(r.kind, r.code, r.data) for r in uplink.published] == [
            ("tube_received", "KG-RG-000010", {"tube": "KG-RG-000010", "batch": "BOX-007"}),
            ("tube_received", "KG-RG-000011", {"tube": "KG-RG-000011", "batch": "BOX-007"}),
        ]
        # After a restart, the unacknowledged records reopen the box with its tubes.
        again = lab()
        again.restore(outbox.pending())
        assert again.box == "BOX-007"
        assert decide(again, "KG-RG-000011")[0][0] is Signal.DUPLICATE


def test_a_lab_section_in_the_configuration_makes_a_lab_station() -> None:
    from agent.__main__ import build_workflow
    from agent.fakes import FakeClock

    clock = FakeClock()
    base = 'station_id = "lab-1"\n[scanner]\ntype = "stdin"\n'
    assert not isinstance(build_workflow(parse_config(base), clock), LabReception)
    config = parse_config(
        base + '[lab]\ntube_patterns = ["T-\\\\d+"]\nbox_patterns = ["B-\\\\d+"]\n'
    )
    assert isinstance(build_workflow(config, clock), LabReception)
    with pytest.raises(ConfigError, match=r"lab\.tube_patterns"):
        parse_config(base + '[lab]\ntube_patterns = ["("]\nbox_patterns = ["B"]\n')
    with pytest.raises(ConfigError, match="not both"):
        parse_config(
            base
            + '[lab]\ntube_patterns = ["T"]\nbox_patterns = ["B"]\n'
            + '[workflow]\ntube_patterns = ["T-[0-9]+"]\n'
        )
