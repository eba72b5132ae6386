"""A station running the sampling workflow: signals in order, records in a real outbox, and
the open session surviving restarts after the server acknowledged everything."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agent.station
from agent.codes import CodeRules
from agent.fakes import FakeClock, FakeScanSource, FakeUplink, RecordingFeedback
from agent.outbox import TinyDbOutbox
from agent.ports import Acked, Scan, Signal
from agent.session import SamplingWorkflow, WorkflowSettings
from agent.station import Station
from tests.agent.people import PERSONS

P1, P2, P3, P4, *_ = PERSONS
SETTINGS = WorkflowSettings(rules=CodeRules.build([r"T-\d{4}"]), pool_size=3, retest_window_s=600)


class Rig:
    """A station with fakes around a real outbox, restartable on the same files."""

    def __init__(self, path: Path, *, capacity: int = 1000, history: bool = True) -> None:
        self.path = path
        self.clock = FakeClock()
        self.capacity = capacity
        self.use_history = history
        self.start()

    def start(self) -> None:
        self.outbox = TinyDbOutbox(self.path, capacity=self.capacity)
        self.outbox.learn_seq_floor(0)  # as the server's Sync would
        self.workflow = SamplingWorkflow(SETTINGS, now=self.clock.wall)
        self.uplink = FakeUplink(connected=True)
        self.feedback = RecordingFeedback()
        self.station = Station(
            station_id="st-1",
            boot_id="boot-1",
            sources=[],
            workflow=self.workflow,
            outbox=self.outbox,
            uplink=self.uplink,
            feedback=self.feedback,
            clock=self.clock,
            history=self.outbox if self.use_history else None,
        )
        self.station.restore()

    def restart(self) -> None:
        self.outbox.close()
        self.start()

    def scan(self, *texts: str, lossy: bool = False) -> list[Signal]:
        first = len(self.feedback.signals)
        for text in texts:
            self.station.handle(Scan(text, "test", lossy=lossy))
            self.clock.advance(2)
        return self.feedback.signals[first:]

    def ack_all(self) -> None:
        self.station.handle(Acked(tuple(r.record_id for r in self.outbox.pending())))
        assert len(self.outbox) == 0


RigFactory = Callable[..., Rig]


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[RigFactory]:
    rigs: list[Rig] = []

    def make(**kwargs: Any) -> Rig:
        rigs.append(Rig(tmp_path / f"outbox-{len(rigs)}.json", **kwargs))
        return rigs[-1]

    yield make
    for r in rigs:
        r.outbox.close()


@pytest.fixture
def rig(make_rig: RigFactory) -> Rig:
    return make_rig()


def test_signals_in_order_and_every_decision_stored(rig: Rig) -> None:
    signals = rig.scan(
        "SWABLINE:STAFF:nv-01",
        "T-0001",
        P1,
        P2,
        P2,
        "SWABLINE:CMD:CLOSE",
        P3,
        "not a code",
        "T-0001",
        "T-0002",
        P3,
        P4,
        "SWABLINE:CMD:UNDO",
    )
    assert signals == [
        Signal.CARD_ACCEPTED,
        Signal.POOL_OPENED,
        Signal.SAVED,
        Signal.SAVED,
        Signal.DUPLICATE,
        Signal.POOL_CLOSED,
        Signal.NO_OPEN_TUBE,
        Signal.REJECTED,
        Signal.DUPLICATE,
        Signal.POOL_OPENED,
        Signal.SAVED,
        Signal.SAVED,
        Signal.UNDONE,
    ]
    records = rig.outbox.pending()
    assert [r.kind for r in records] == [
        "sign_in",
        "tube_opened",
        "person_added",
        "person_added",
        "scan_rejected",
        "pool_closed",
        "scan_rejected",
        "scan_rejected",
        "scan_rejected",
        "tube_opened",
        "person_added",
        "person_added",
        "undo",
    ]
    assert [r.seq for r in records] == list(range(1, 14))
    assert all(r.station_id == "st-1" and r.boot_id == "boot-1" for r in records)
    assert records[2].data["staff_id"] == "nv-01"
    assert records[12].data["undone_seq"] == records[11].seq
    # published as soon as they were durable
    assert [r.record_id for r in rig.uplink.published] == [r.record_id for r in records]


def test_the_open_session_survives_a_restart_after_everything_was_acknowledged(
    rig: Rig,
) -> None:
    rig.scan("T-0001", P1, "T-0002", P2, P3)
    before = rig.workflow.session()
    rig.ack_all()
    assert rig.feedback.signals[-1] is Signal.CONFIRMED
    rig.restart()
    assert rig.workflow.session() == before
    assert rig.scan(P2, "T-0001", "T-0002", P4) == [
        Signal.DUPLICATE,  # already in the open pool
        Signal.DUPLICATE,  # tube used before the restart
        Signal.DUPLICATE,  # the open tube itself
        Signal.POOL_FULL,  # the pool of three goes on where it was
    ]
    rig.scan("T-0003")
    assert rig.scan(P1) == [Signal.WARNING]  # sampled a minute ago, before the restart


def test_without_a_history_a_restart_after_acks_forgets_the_session(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(history=False)
    rig.scan("T-0001", P1)
    rig.ack_all()
    rig.restart()
    assert rig.workflow.session().tube is None
    assert rig.scan("T-0001") == [Signal.POOL_OPENED]  # the reused tube goes unnoticed


def test_a_power_cut_before_any_ack_restores_from_the_outbox(rig: Rig) -> None:
    rig.scan("T-0001", P1, P2)
    before = rig.workflow.session()
    rig.restart()  # nothing acknowledged
    assert rig.workflow.session() == before
    rig.ack_all()
    rig.scan(P3)
    rig.restart()
    assert rig.workflow.session().tube.persons == (  # type: ignore[union-attr]
        P1.split("|")[0],
        P2.split("|")[0],
        P3.split("|")[0],
    )


def test_the_history_keeps_only_keys_never_names_or_raw_codes(rig: Rig) -> None:
    rig.scan("SWABLINE:STAFF:nv-01", "T-0001", P1, "garbage", P1, "T-0002", P2)
    kept = rig.outbox.remembered()
    assert {r.kind for r in kept} == {"sign_in", "tube_opened", "person_added"}
    for record in kept:
        if record.kind == "person_added":
            assert record.code is None
            assert set(record.data["person"]) == {"key_type", "key", "name_reliable"}
    text = " ".join(r.model_dump_json() for r in kept)
    assert "Nguyễn" not in text and "Trần" not in text and "Lê Lợi" not in text


def test_the_history_is_pruned_to_what_the_session_needs(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent.station, "_PRUNE_HISTORY_EVERY", 5)
    for n in range(1, 21):
        rig.scan(f"T-{n:04d}", P1, P2, "SWABLINE:CMD:CLOSE")
        rig.ack_all()
        rig.clock.advance(700)  # beyond the retest window
    kept = rig.outbox.remembered()
    kinds = [r.kind for r in kept]
    assert kinds.count("tube_opened") == 20  # tubes are remembered for good
    assert kinds.count("person_added") <= 2 * 5  # old persons are let go
    assert "pool_closed" in kinds  # the last pool's close, still the session's
    rig.restart()
    assert rig.scan("T-0001", "T-0021", P1) == [
        Signal.DUPLICATE,
        Signal.POOL_OPENED,
        Signal.SAVED,
    ]


def test_a_full_outbox_refuses_the_scan_and_the_session_does_not_move(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(capacity=2)
    assert rig.scan("T-0001", P1, P2) == [Signal.POOL_OPENED, Signal.SAVED, Signal.STORAGE_FULL]
    assert rig.workflow.session().tube.persons == (P1.split("|")[0],)  # type: ignore[union-attr]
    rig.ack_all()
    assert rig.scan(P2) == [Signal.SAVED]  # not a duplicate: it was never stored


def test_a_decision_is_stored_whole_or_not_at_all(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(capacity=3)
    rig.scan("T-0001", P1)
    # the next tube needs two records (close tube 1, open tube 2): only one would fit, so the
    # outbox stores neither and the session does not move
    assert rig.scan("T-0002") == [Signal.STORAGE_FULL]
    assert [r.kind for r in rig.outbox.pending()] == ["tube_opened", "person_added"]
    view = rig.workflow.session()
    assert view.tube is not None and view.tube.tube == "T-0001" and view.tube.open
    assert "T-0002" not in view.used_tubes
    rig.ack_all()
    assert rig.scan("T-0002") == [Signal.POOL_OPENED]
    assert [r.kind for r in rig.outbox.pending()] == ["pool_closed", "tube_opened"]


def test_a_cccd_from_a_keyboard_scanner_is_stored_without_its_name(rig: Rig) -> None:
    rig.scan("T-0001")
    mangled = P1.replace("ễ", "").replace("ị", "").replace("ì", "").replace("ữ", "")
    assert rig.scan(mangled, lossy=True) == [Signal.SAVED]
    person = rig.outbox.pending()[-1].data["person"]
    assert person == {
        "key_type": "cccd",
        "key": P1.split("|")[0],
        "name_reliable": False,
        "birth_date": "2003-08-15",
        "sex": "female",
        "document_number": P1.split("|")[0],
        "issue_date": "2021-04-20",
    }


def test_a_running_station_with_a_scan_source(tmp_path: Path) -> None:
    outbox = TinyDbOutbox(tmp_path / "outbox.json")
    outbox.learn_seq_floor(0)  # as the server's Sync would
    feedback = RecordingFeedback()
    clock = FakeClock()
    station = Station(
        station_id="st-1",
        boot_id="boot-1",
        sources=[FakeScanSource(["T-0001", P1, P2, P3, P4])],
        workflow=SamplingWorkflow(SETTINGS, now=clock.wall),
        outbox=outbox,
        uplink=FakeUplink(connected=True),
        feedback=feedback,
        clock=clock,
        history=outbox,
        tick_s=0.05,
    )
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while len(feedback.signals) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        runner.join(10)
        outbox.close()
    assert feedback.signals == [
        Signal.POOL_OPENED,
        Signal.SAVED,
        Signal.SAVED,
        Signal.POOL_FULL,
        Signal.NO_OPEN_TUBE,
    ]
