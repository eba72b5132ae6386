"""The session history a station keeps beside its outbox stays bounded over weeks of work."""

from __future__ import annotations

from pathlib import Path

from agent.codes import CodeRules
from agent.fakes import FakeClock, FakeUplink, RecordingFeedback
from agent.outbox import TinyDbOutbox
from agent.ports import Acked, Scan, Signal
from agent.session import SamplingWorkflow, WorkflowSettings
from agent.station import Station
from tests.agent.people import PERSONS

DAY = 86_400.0
SETTINGS = WorkflowSettings(
    rules=CodeRules.build([r"T-\d{5}"]),
    mode="single",
    retest_window_s=3600,
    used_tube_window_s=2 * DAY,
)
TUBES_A_DAY = 120


def station(path: Path, clock: FakeClock) -> tuple[Station, TinyDbOutbox, RecordingFeedback]:
    outbox = TinyDbOutbox(path, wall=clock.wall)
    outbox.learn_seq_floor(0)
    feedback = RecordingFeedback()
    st = Station(
        station_id="st-1",
        boot_id="boot-1",
        sources=[],
        workflow=SamplingWorkflow(SETTINGS, now=clock.wall),
        outbox=outbox,
        uplink=FakeUplink(connected=True),
        feedback=feedback,
        clock=clock,
        history=outbox,
    )
    st.restore()
    return st, outbox, feedback


def work_a_day(st: Station, outbox: TinyDbOutbox, clock: FakeClock, day: int) -> None:
    for n in range(TUBES_A_DAY):
        st.handle(Scan(f"T-{day:02d}{n:03d}", "test"))
        st.handle(Scan(PERSONS[n % len(PERSONS)], "test"))
        clock.advance(60)
    st.handle(Acked(tuple(r.record_id for r in outbox.pending())))  # all delivered


def test_the_history_keeps_only_the_tubes_of_the_used_tube_window(tmp_path: Path) -> None:
    clock = FakeClock()
    st, outbox, feedback = station(tmp_path / "outbox", clock)
    for day in range(10):
        work_a_day(st, outbox, clock, day)
        clock.advance(DAY - TUBES_A_DAY * 60)
    assert Signal.DUPLICATE not in feedback.signals
    opened = {r.data["tube"] for r in outbox.remembered() if r.kind == "tube_opened"}
    # Ten days of tubes were opened; the history holds at most the last two days' and some
    # not pruned yet (it is pruned every 500 new entries and at each start).
    assert len(opened) <= 3 * TUBES_A_DAY
    assert "T-00000" not in opened and "T-09119" in opened
    # After a restart (power cut) the pruned station still refuses a recent tube and accepts
    # a label last used ten days ago.
    outbox.close()
    st, outbox, feedback = station(tmp_path / "outbox", clock)
    opened = {r.data["tube"] for r in outbox.remembered() if r.kind == "tube_opened"}
    assert len(opened) <= 2 * TUBES_A_DAY
    st.handle(Scan("T-09000", "test"))
    st.handle(Scan("T-00000", "test"))
    assert feedback.signals == [Signal.DUPLICATE, Signal.POOL_OPENED]
    outbox.close()
