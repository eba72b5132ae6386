"""The station loop with fakes at the seams and a real outbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.fakes import FakeClock, FakeUplink, RecordingFeedback
from agent.outbox import TinyDbOutbox
from agent.ports import Condition, Scan, ScannerState, Signal
from agent.station import RecordEveryScan, Station

Made = tuple[Station, RecordingFeedback, TinyDbOutbox, FakeClock]


@pytest.fixture
def make_station() -> Iterator[Callable[[Path, FakeUplink], Made]]:
    opened: list[TinyDbOutbox] = []

    def make(tmp_path: Path, uplink: FakeUplink) -> Made:
        outbox = TinyDbOutbox(tmp_path / "outbox.json")
        outbox.learn_seq_floor(0)  # as the server's Sync would
        opened.append(outbox)
        return _station(outbox, uplink)

    yield make
    for outbox in opened:
        outbox.close()


def _station(outbox: TinyDbOutbox, uplink: FakeUplink) -> Made:
    feedback = RecordingFeedback()
    clock = FakeClock()
    station = Station(
        station_id="st-1",
        boot_id="boot-1",
        sources=[],
        workflow=RecordEveryScan(),
        outbox=outbox,
        uplink=uplink,
        feedback=feedback,
        clock=clock,
        heartbeat_s=10,
        resend_after_s=30,
    )
    uplink.start(station.handle)
    return station, feedback, outbox, clock


def test_a_scan_is_saved_then_confirmed_by_the_server(
    tmp_path: Path, make_station: Callable[[Path, FakeUplink], Made]
) -> None:
    uplink = FakeUplink()
    station, feedback, outbox, _ = make_station(tmp_path, uplink)
    station.handle(Scan(text="KG-RG-000123", source="test"))
    assert feedback.signals == [Signal.SAVED]
    assert [r.code for r in uplink.published] == ["KG-RG-000123"]
    record = uplink.published[0]
    assert (record.station_id, record.seq, record.boot_id) == ("st-1", 1, "boot-1")
    assert len(outbox) == 1  # still waiting: a PUBACK is not an acknowledgement
    uplink.ack([record.record_id])
    assert feedback.signals == [Signal.SAVED, Signal.CONFIRMED]
    assert len(outbox) == 0


def test_offline_scans_are_kept_and_sent_on_reconnect(
    tmp_path: Path, make_station: Callable[[Path, FakeUplink], Made]
) -> None:
    uplink = FakeUplink(connected=False)
    station, feedback, _, _ = make_station(tmp_path, uplink)
    for code in ("A-1", "A-2"):
        station.handle(Scan(text=code, source="test"))
    assert feedback.signals == [Signal.SAVED, Signal.SAVED]  # saving goes on while offline
    assert uplink.published == []
    uplink.set_connected(True)
    station.tick()  # the backlog drains from the loop, at the configured pace
    assert feedback.conditions[Condition.OFFLINE] is False
    assert [r.code for r in uplink.published] == ["A-1", "A-2"]
    uplink.set_connected(False)
    assert feedback.conditions[Condition.OFFLINE] is True
    uplink.set_connected(True)  # not acknowledged yet: everything goes again
    station.tick()
    assert [r.code for r in uplink.published] == ["A-1", "A-2", "A-1", "A-2"]


def test_unacknowledged_records_are_resent_after_the_timeout(
    tmp_path: Path, make_station: Callable[[Path, FakeUplink], Made]
) -> None:
    uplink = FakeUplink()
    station, _, _, clock = make_station(tmp_path, uplink)
    station.handle(Scan(text="B-1", source="test"))
    station.tick()
    assert [r.code for r in uplink.published] == ["B-1"]
    clock.advance(61)  # the first resend waits 30 to 60 s (jittered)
    station.tick()
    assert [r.code for r in uplink.published] == ["B-1", "B-1"]
    uplink.ack([uplink.published[0].record_id])
    clock.advance(121)
    station.tick()
    assert len(uplink.published) == 2


def test_heartbeats_report_the_outbox_depth(
    tmp_path: Path, make_station: Callable[[Path, FakeUplink], Made]
) -> None:
    uplink = FakeUplink()
    station, _, _, clock = make_station(tmp_path, uplink)
    station.handle(Scan(text="C-1", source="test"))
    station.tick()
    clock.advance(5)
    station.tick()
    clock.advance(5)
    station.tick()
    assert [hb.outbox_depth for hb in uplink.heartbeats] == [1, 1]


def test_sequence_numbers_continue_after_a_restart(
    tmp_path: Path, make_station: Callable[[Path, FakeUplink], Made]
) -> None:
    uplink = FakeUplink()
    station, _, outbox, _ = make_station(tmp_path, uplink)
    station.handle(Scan(text="D-1", source="test"))
    uplink.ack([uplink.published[0].record_id])
    outbox.close()
    uplink2 = FakeUplink()
    station2, _, _, _ = make_station(tmp_path, uplink2)
    station2.handle(Scan(text="D-2", source="test"))
    assert uplink2.published[0].seq == 2


def test_rejected_input_and_scanner_state_drive_signals(
    tmp_path: Path, make_station: Callable[[Path, FakeUplink], Made]
) -> None:
    uplink = FakeUplink()
    station, feedback, outbox, _ = make_station(tmp_path, uplink)
    station.handle(Scan(text="AB", source="kbd", rejected="events lost (SYN_DROPPED)"))
    assert feedback.signals == [Signal.REJECTED]
    assert len(outbox) == 0
    station.handle(ScannerState(source="kbd", present=False))
    assert feedback.conditions[Condition.SCANNER_MISSING] is True
    station.handle(ScannerState(source="kbd", present=True))
    assert feedback.conditions[Condition.SCANNER_MISSING] is False
