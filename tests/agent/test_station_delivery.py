"""The station's side of delivery: saved before the signal, paced resends, limits, signals."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from agent.fakes import FakeClock, FakeScanSource, FakeUplink, RecordingFeedback
from agent.outbox import TinyDbOutbox
from agent.ports import Condition, Scan, Signal, Synced
from agent.station import RecordEveryScan, Station


class JournalCheckingFeedback(RecordingFeedback):
    """Records, at each SAVED signal, whether the last scan's code is already in the files."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.last_code = ""
        self.on_disk_at_signal: list[bool] = []

    def signal(self, signal: Signal) -> None:
        if signal is Signal.SAVED:
            data = b"".join(f.read_bytes() for f in self.folder.iterdir() if f.is_file())
            self.on_disk_at_signal.append(self.last_code.encode() in data)
        super().signal(signal)


def make(
    tmp_path: Path,
    *,
    connected: bool = True,
    ready: bool = True,
    outbox_args: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Station, TinyDbOutbox, FakeUplink, RecordingFeedback, FakeClock]:
    clock = FakeClock()
    outbox = TinyDbOutbox(tmp_path / "outbox", wall=clock.wall, **(outbox_args or {}))
    if ready:
        outbox.learn_seq_floor(0)
    uplink = FakeUplink(connected=connected)
    feedback = RecordingFeedback()
    station = Station(
        station_id="st-1",
        boot_id="boot",
        sources=[],
        workflow=RecordEveryScan(),
        outbox=outbox,
        uplink=uplink,
        feedback=feedback,
        clock=clock,
        **kwargs,
    )
    uplink.start(station.handle)
    return station, outbox, uplink, feedback, clock


def scan(station: Station, code: str) -> None:
    station.handle(Scan(text=code, source="test"))


def test_saved_is_signalled_only_once_the_record_is_on_disk(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = TinyDbOutbox(tmp_path / "outbox", wall=clock.wall)
    outbox.learn_seq_floor(0)
    feedback = JournalCheckingFeedback(tmp_path / "outbox")
    station = Station(
        station_id="st-1",
        boot_id="boot",
        sources=[],
        workflow=RecordEveryScan(),
        outbox=outbox,
        uplink=FakeUplink(connected=False),
        feedback=feedback,
        clock=clock,
    )
    for i in range(5):
        feedback.last_code = f"TUBE-{i}"
        scan(station, feedback.last_code)
    assert feedback.on_disk_at_signal == [True] * 5


def test_scans_saved_offline_are_sent_in_order_after_connecting(tmp_path: Path) -> None:
    station, outbox, uplink, feedback, _ = make(tmp_path, connected=False)
    for i in range(5):
        scan(station, f"TUBE-{i}")
    assert feedback.signals == [Signal.SAVED] * 5
    assert uplink.published == []
    uplink.set_connected(True)
    station.tick()
    assert [r.seq for r in uplink.published] == [1, 2, 3, 4, 5]
    assert [r.code for r in uplink.published] == [f"TUBE-{i}" for i in range(5)]
    uplink.ack(r.record_id for r in uplink.published)
    assert len(outbox) == 0
    assert feedback.signals[-1] is Signal.CONFIRMED


def test_a_backlog_drains_at_the_configured_pace(tmp_path: Path) -> None:
    station, _, uplink, _, clock = make(tmp_path, connected=False, drain_per_s=100)
    for i in range(60):
        scan(station, f"TUBE-{i}")
    uplink.set_connected(True)
    station.tick()
    assert len(uplink.published) == 10  # a burst of a tenth of a second
    station.tick()
    assert len(uplink.published) == 10  # no time passed
    for _ in range(5):
        clock.advance(0.1)
        station.tick()
    assert len(uplink.published) == 60
    assert [r.seq for r in uplink.published] == list(range(1, 61))


def test_sending_pauses_while_too_many_records_wait_for_acknowledgement(tmp_path: Path) -> None:
    station, _, uplink, _, clock = make(tmp_path, connected=False, max_unacked=4)
    for i in range(10):
        scan(station, f"TUBE-{i}")
    uplink.set_connected(True)
    station.tick()
    assert [r.seq for r in uplink.published] == [1, 2, 3, 4]
    clock.advance(1)
    station.tick()
    assert len(uplink.published) == 4
    uplink.ack([uplink.published[0].record_id, uplink.published[1].record_id])
    station.tick()
    assert [r.seq for r in uplink.published] == [1, 2, 3, 4, 5, 6]


def test_unacknowledged_records_are_sent_again_after_a_while_and_after_a_reconnect(
    tmp_path: Path,
) -> None:
    station, _, uplink, _, clock = make(tmp_path, resend_after_s=30)
    scan(station, "TUBE-1")
    scan(station, "TUBE-2")
    assert [r.seq for r in uplink.published] == [1, 2]
    uplink.ack([uplink.published[0].record_id])
    clock.advance(29)
    station.tick()
    assert len(uplink.published) == 2
    clock.advance(2)
    station.tick()
    station.tick()
    assert [r.seq for r in uplink.published] == [1, 2, 2]  # only the unacknowledged one
    uplink.set_connected(False)
    uplink.set_connected(True)
    station.tick()
    assert [r.seq for r in uplink.published] == [1, 2, 2, 2]


def test_confirmed_is_signalled_for_the_latest_scan_not_for_old_backlog(tmp_path: Path) -> None:
    station, _, uplink, feedback, _ = make(tmp_path, connected=False)
    scan(station, "OLD-1")
    scan(station, "OLD-2")
    uplink.set_connected(True)
    station.tick()
    scan(station, "NEW")
    old, new = uplink.published[0], uplink.published[-1]
    uplink.ack([old.record_id])
    assert Signal.CONFIRMED not in feedback.signals
    uplink.ack([new.record_id])
    assert feedback.signals[-1] is Signal.CONFIRMED


def test_a_new_outbox_refuses_scans_until_the_server_gives_the_seq_floor(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = TinyDbOutbox(tmp_path / "outbox", wall=clock.wall)
    uplink = FakeUplink(connected=False)
    feedback = RecordingFeedback()
    station = Station(
        station_id="st-1",
        boot_id="boot",
        sources=[FakeScanSource(["TUBE-EARLY"])],
        workflow=RecordEveryScan(),
        outbox=outbox,
        uplink=uplink,
        feedback=feedback,
        clock=clock,
        tick_s=0.01,
    )
    stop = threading.Event()
    thread = threading.Thread(target=station.run, args=(stop,))
    thread.start()
    try:
        while Signal.REJECTED not in feedback.signals:
            stop.wait(0.01)
        assert feedback.conditions[Condition.AWAITING_SERVER] is True
        assert len(outbox) == 0
        uplink.set_connected(True)
        station.submit(Synced(max_seq=41))  # a reinstalled station: the server has 1..41
        station.submit(Scan(text="TUBE-LATER", source="test"))
        while not uplink.published:
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join()
    assert feedback.conditions[Condition.AWAITING_SERVER] is False
    assert [(r.seq, r.code) for r in uplink.published] == [(42, "TUBE-LATER")]


def test_a_full_outbox_refuses_scans_with_a_clear_signal(tmp_path: Path) -> None:
    station, outbox, _, feedback, _ = make(
        tmp_path, connected=False, outbox_args={"capacity": 10, "warn_at_pct": 70}
    )
    for i in range(7):
        scan(station, f"TUBE-{i}")
    assert feedback.conditions.get(Condition.OUTBOX_NEARLY_FULL) is True
    for i in range(7, 12):
        scan(station, f"TUBE-{i}")
    assert feedback.signals == [Signal.SAVED] * 10 + [Signal.STORAGE_FULL] * 2
    assert len(outbox) == 10
    assert station.heartbeat().outbox_nearly_full is True


def test_the_heartbeat_reports_the_outbox(tmp_path: Path) -> None:
    station, _, uplink, _, clock = make(tmp_path, connected=False, outbox_args={"capacity": 500})
    scan(station, "TUBE-1")
    clock.advance(90)
    scan(station, "TUBE-2")
    hb = station.heartbeat()
    assert hb.outbox_depth == 2
    assert hb.oldest_pending_age_s == pytest.approx(90)
    assert hb.outbox_capacity == 500
    assert hb.last_seq == 2
    assert hb.outbox_nearly_full is False
    uplink.set_connected(True)
    station.tick()
    assert uplink.heartbeats[-1].outbox_depth == 2


def test_acknowledged_records_are_purged_after_the_retention_time(tmp_path: Path) -> None:
    station, outbox, uplink, _, clock = make(tmp_path, acked_retention_s=3600, purge_every_s=60)
    scan(station, "TUBE-1")
    uplink.ack([uplink.published[0].record_id])
    station.tick()
    assert outbox.acked_kept == 1
    clock.advance(1800)
    station.tick()
    assert outbox.acked_kept == 1
    clock.advance(1900)
    station.tick()
    assert outbox.acked_kept == 0
