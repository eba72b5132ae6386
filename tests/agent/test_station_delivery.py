"""The station's side of delivery: saved before the signal, paced sending, resends that back off
and never repeat what a draining server is working through, limits, signals."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.errors import ConfigError
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


class Lowest(random.Random):
    """Jitter that always draws the shortest wait of its window."""

    def uniform(self, a: float, b: float) -> float:
        return a


class Longest(random.Random):
    """Jitter that always draws the longest wait of its window."""

    def uniform(self, a: float, b: float) -> float:
        return b


def publish_times(
    station: Station, uplink: FakeUplink, clock: FakeClock, seconds: int, seq: int
) -> list[int]:
    """Seconds (from now) at which record ``seq`` is published, ticking once a second."""
    times = []
    for t in range(1, seconds + 1):
        clock.advance(1)
        before = len(uplink.published)
        station.tick()
        times += [t for r in uplink.published[before:] if r.seq == seq]
    return times


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
    station, _, uplink, _, clock = make(tmp_path, resend_after_s=30, rng=Lowest())
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


def test_nothing_is_sent_twice_while_the_server_acknowledges_a_backlog_in_order(
    tmp_path: Path,
) -> None:
    # The server drains slowly (one record every 20 s) but steadily: it is alive, so offering
    # it the rest again would only make it slower (BENCHMARKS.md, finding 3).
    station, outbox, uplink, _, clock = make(
        tmp_path, connected=False, resend_after_s=30, rng=Lowest()
    )
    for i in range(10):
        scan(station, f"TUBE-{i}")
    uplink.set_connected(True)
    station.tick()
    assert [r.seq for r in uplink.published] == list(range(1, 11))
    for i in range(10):
        for _ in range(20):
            clock.advance(1)
            station.tick()
        uplink.ack([uplink.published[i].record_id])
    assert [r.seq for r in uplink.published] == list(range(1, 11))  # 200 s, no copy
    assert len(outbox) == 0


def test_records_are_sent_again_once_the_acknowledgements_stop(tmp_path: Path) -> None:
    station, _, uplink, _, clock = make(tmp_path, connected=False, resend_after_s=30, rng=Lowest())
    for i in range(4):
        scan(station, f"TUBE-{i}")
    uplink.set_connected(True)
    station.tick()
    for t in range(1, 41):  # acknowledgements until second 40, then silence
        clock.advance(1)
        if t in (20, 40):
            uplink.ack([uplink.published[t // 20 - 1].record_id])
        station.tick()
    assert len(uplink.published) == 4
    resent = publish_times(station, uplink, clock, 40, seq=3)
    assert resent == [30]  # 30 s after the last acknowledgement
    assert [r.seq for r in uplink.published] == [1, 2, 3, 4, 3, 4]


def test_a_record_the_server_skipped_is_sent_again_while_later_ones_are_acknowledged(
    tmp_path: Path,
) -> None:
    # The broker dropped seq 2 (its queue was full) but the server goes on acknowledging the
    # scans that follow: waiting for a silence would leave seq 2 behind (a gap) all day.
    station, _, uplink, _, clock = make(tmp_path, resend_after_s=30, rng=Lowest())
    scan(station, "TUBE-1")
    scan(station, "TUBE-2")
    uplink.ack([uplink.published[0].record_id])
    sent_at: list[int] = []
    for t in range(1, 51):
        clock.advance(1)
        if t % 5 == 0:  # a new scan every 5 s, acknowledged at once
            scan(station, f"MORE-{t}")
            uplink.ack([uplink.published[-1].record_id])
        before = len(uplink.published)
        station.tick()
        sent_at += [t for r in uplink.published[before:] if r.seq == 2]
    assert sent_at == [30]  # once its interval had passed, and only then
    assert [r.seq for r in uplink.published].count(1) == 1


def test_a_records_resend_interval_doubles_up_to_the_cap(tmp_path: Path) -> None:
    station, _, uplink, _, clock = make(
        tmp_path, resend_after_s=30, resend_max_s=300, rng=Longest()
    )
    scan(station, "TUBE-1")  # the server never answers
    times = publish_times(station, uplink, clock, 1500, seq=1)
    gaps = [b - a for a, b in zip([0, *times], times, strict=False)]
    assert gaps == [60, 120, 240, 300, 300, 300]


def test_resend_intervals_are_jittered_between_resend_after_and_the_doubled_window(
    tmp_path: Path,
) -> None:
    fleet = []
    for seed in range(20):
        station, _, uplink, _, clock = make(
            tmp_path / str(seed), resend_after_s=30, resend_max_s=300, rng=random.Random(seed)
        )
        scan(station, "TUBE-1")
        times = publish_times(station, uplink, clock, 400, seq=1)
        gaps = [b - a for a, b in zip([0, *times], times, strict=False)]
        for n, gap in enumerate(gaps[:3], start=1):
            assert 30 <= gap <= min(300, 30 * 2**n) + 1  # + the once-a-second check
        fleet.append(gaps[0])
    assert len(set(fleet)) > 10  # stations that lost the server together do not resend together


def test_after_a_reconnect_everything_pending_goes_at_once_whatever_its_backoff(
    tmp_path: Path,
) -> None:
    station, _, uplink, _, clock = make(tmp_path, resend_after_s=30, rng=Longest())
    for i in range(3):
        scan(station, f"TUBE-{i}")
    publish_times(station, uplink, clock, 200, seq=1)  # resent twice, the window grew
    uplink.set_connected(False)
    uplink.set_connected(True)
    before = len(uplink.published)
    station.tick()
    assert [r.seq for r in uplink.published[before:]] == [1, 2, 3]
    assert publish_times(station, uplink, clock, 61, seq=1) == [60]  # the backoff starts over


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


def test_a_resend_cap_below_the_first_interval_is_refused_with_the_key_named() -> None:
    base = 'station_id = "st-1"\n[scanner]\ntype = "stdin"\n[mqtt]\n'
    assert parse_config(base + "resend_after_s = 60\nresend_max_s = 600\n").mqtt.resend_max_s == 600
    with pytest.raises(ConfigError, match="resend_after_s must not exceed resend_max_s"):
        parse_config(base + "resend_after_s = 600\nresend_max_s = 300\n")
