"""Heartbeat telemetry and remote commands on a station with fakes at the seams, a real outbox."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.commands import CommandHandler
from agent.config import parse_config
from agent.diagnostics import Diagnostics, RingLogHandler, redact, scrub
from agent.fakes import FakeClock, FakeHealthProbe, FakeUplink, RecordingFeedback
from agent.health import HealthReading, Throttling
from agent.ops import OpsHooks
from agent.outbox import TinyDbOutbox
from agent.ports import (
    Acked,
    CommandReceived,
    Decision,
    Entry,
    Scan,
    ScannerState,
    Signal,
)
from agent.station import RecordEveryScan, Station
from agent.telemetry import HeartbeatReporter
from protocol import Command, encode
from protocol.commands import RESTART_EXIT_CODE
from protocol.events import Setting
from protocol.messages import MAX_PAYLOAD_BYTES

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
CONFIG = parse_config(
    'station_id = "st-1"\n[mqtt]\npassword_file = "/etc/swabline/pw"\n[scanner]\ntype = "stdin"\n'
)


class PoolWorkflow(RecordEveryScan):
    """A workflow with settings, as the sampling workflow has (``apply_setting``)."""

    def __init__(self) -> None:
        self.pool_size = 10
        self.tube_open = False

    def apply_setting(self, setting: Setting) -> Decision:
        if self.tube_open:
            raise ValueError("close the open tube first")
        if setting.pool_size is not None:
            self.pool_size = setting.pool_size
        entry = Entry(kind="setting", data=setting.model_dump(exclude_none=True))
        return Decision(entries=(entry,), signal=Signal.SAVED)


@dataclass
class Rig:
    station: Station
    uplink: FakeUplink
    feedback: RecordingFeedback
    clock: FakeClock
    outbox: TinyDbOutbox
    probe: FakeHealthProbe
    workflow: RecordEveryScan
    logs: RingLogHandler

    def command(self, name: str, args: dict[str, object] | None = None, **kw: object) -> None:
        cmd = Command(
            command_id=str(kw.get("command_id", f"c-{name}")),
            name=name,
            args=args or {},
            expires_at=float(kw.get("expires_at", self.clock.wall() + 600)),  # type: ignore[arg-type]
            server_time=kw.get("server_time"),  # type: ignore[arg-type]
        )
        self.station.handle(CommandReceived(cmd))

    def heartbeat(self) -> dict[str, object]:
        self.clock.advance(10)
        self.station.tick()
        return json.loads(encode(self.uplink.heartbeats[-1]))  # type: ignore[no-any-return]


def build(
    tmp_path: Path, *, workflow: RecordEveryScan | None = None, clock: FakeClock | None = None
) -> Rig:
    outbox = TinyDbOutbox(tmp_path / "outbox.json")
    outbox.learn_seq_floor(0)  # as the server's Sync would
    clock = clock or FakeClock()
    feedback = RecordingFeedback()
    uplink = FakeUplink()
    probe = FakeHealthProbe()
    workflow = workflow or RecordEveryScan()
    logs = RingLogHandler(capacity=500)
    reporter = HeartbeatReporter(
        clock=clock,
        outbox=outbox,
        probe=probe,
        agent_version="9.9.9",
        boot_id="boot-1",
        heartbeat_s=10,
        scanners_expected=1,
    )
    diagnostics = Diagnostics(
        config=CONFIG,
        outbox=outbox,
        logs=logs,
        probe=probe,
        clock=clock,
        agent_version="9.9.9",
    )
    commands = CommandHandler(
        workflow=workflow,
        feedback=feedback,
        clock=clock,
        publish_result=uplink.publish_command_result,
        diagnostics=diagnostics.bundle,
        identify_every_s=3,
    )
    station = Station(
        station_id="st-1",
        boot_id="boot-1",
        sources=[],
        workflow=workflow,
        outbox=outbox,
        uplink=uplink,
        feedback=feedback,
        clock=clock,
        heartbeat_s=10,
        ops=OpsHooks(reporter=reporter, commands=commands),
    )
    uplink.start(station.handle)
    return Rig(station, uplink, feedback, clock, outbox, probe, workflow, logs)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = build(tmp_path)
    yield r
    r.outbox.close()


def test_heartbeat_reports_every_health_field(rig: Rig) -> None:
    rig.probe.reading = HealthReading(
        cpu_temp_c=81.5,
        load_avg=1.25,
        mem_total_mb=3800,
        mem_available_mb=2700,
        disk_total_mb=29000,
        disk_free_mb=420,
        wifi_signal_dbm=-71,
        throttling=Throttling(0x50005),
    )
    rig.station.handle(Scan(text="KG-1", source="usb"))
    rig.clock.advance(5)
    rig.station.handle(Scan(text="KG-2", source="usb"))
    last_scan = rig.clock.wall()
    rig.station.handle(Scan(text="bad", source="usb", rejected="SYN_DROPPED"))
    rig.station.handle(ScannerState(source="usb", present=False))
    rig.uplink.set_connected(False)
    rig.uplink.set_connected(True)
    rig.clock.advance(2)
    rig.uplink.ack([])  # an ack naming nothing still carries no server time: no estimate
    rig.station.handle(Acked((), server_time=rig.clock.wall() - 42.5))
    hb = rig.heartbeat()
    assert hb["outbox_depth"] == 2
    assert hb["agent_version"] == "9.9.9" and hb["boot_id"] == "boot-1"
    assert hb["heartbeat_s"] == 10 and hb["clock_synced"] is True
    assert hb["clock_offset_s"] == 42.5
    assert hb["oldest_pending_age_s"] == pytest.approx(17)  # first scan, 5 + 2 + 10 s ago
    assert hb["scans_today"] == 2  # the rejected read is not a scan
    assert hb["last_scan_at"] == last_scan
    assert (hb["scanners_connected"], hb["scanners_expected"]) == (0, 1)
    assert hb["mqtt_reconnects"] == 1
    assert hb["cpu_temp_c"] == 81.5 and hb["disk_free_mb"] == 420
    assert hb["wifi_signal_dbm"] == -71 and hb["load_avg"] == 1.25
    assert (hb["under_voltage"], hb["throttled"], hb["throttled_flags"]) == (True, True, 0x50005)
    rig.station.handle(ScannerState(source="usb", present=True))
    assert rig.heartbeat()["scanners_connected"] == 1


def test_unknown_readings_are_left_out_of_the_heartbeat(rig: Rig) -> None:
    hb = rig.heartbeat()
    assert "cpu_temp_c" not in hb and "under_voltage" not in hb and "clock_offset_s" not in hb
    assert "oldest_pending_age_s" not in hb  # nothing waiting


def test_scans_today_restart_at_local_midnight(tmp_path: Path) -> None:
    before_midnight = datetime(2026, 11, 27, 23, 59, 40, tzinfo=HCM).timestamp()
    r = build(tmp_path, clock=FakeClock(before_midnight))
    try:
        r.station.handle(Scan(text="A", source="s"))
        r.station.handle(Scan(text="B", source="s"))
        assert r.heartbeat()["scans_today"] == 2  # 23:59:50 local
        assert r.heartbeat()["scans_today"] == 0  # 00:00:00 local: a new day
        r.station.handle(Scan(text="C", source="s"))
        assert r.heartbeat()["scans_today"] == 1
    finally:
        r.outbox.close()


def test_oldest_record_age_follows_the_monotonic_clock_when_the_wall_clock_jumps(
    rig: Rig,
) -> None:
    rig.station.handle(Scan(text="A", source="s"))
    rig.clock.advance(30)
    rig.clock._wall -= 3600  # NTP steps the clock back an hour
    assert rig.heartbeat()["oldest_pending_age_s"] == pytest.approx(40)


def test_identify_blinks_now_and_again_until_it_times_out(rig: Rig) -> None:
    rig.command("identify", {"duration_s": 10}, server_time=rig.clock.wall() - 1)
    assert rig.feedback.signals == [Signal.IDENTIFY]
    for _ in range(15):
        rig.clock.advance(1)
        rig.station.tick()
    assert rig.feedback.signals.count(Signal.IDENTIFY) == 4  # at 0, 3, 6, 9 s; stopped at 10 s
    [result] = rig.uplink.command_results
    assert result.ok and result.command_id == "c-identify"
    assert result.detail == {"duration_s": 10}
    assert rig.heartbeat()["clock_offset_s"] == pytest.approx(1)  # from the command's time


def test_a_repeated_command_is_answered_again_but_carried_out_once(rig: Rig) -> None:
    rig.command("identify", {"duration_s": 1})
    rig.command("identify", {"duration_s": 1})
    assert rig.feedback.signals == [Signal.IDENTIFY]
    assert [r.ok for r in rig.uplink.command_results] == [True, True]
    assert rig.uplink.command_results[0] == rig.uplink.command_results[1]


def test_expired_commands_are_refused_only_when_the_clock_can_be_trusted(rig: Rig) -> None:
    rig.command("identify", command_id="late", expires_at=rig.clock.wall() - 5)
    assert not rig.uplink.command_results[-1].ok
    assert "expired" in rig.uplink.command_results[-1].detail["error"]
    assert rig.feedback.signals == []
    rig.clock.synced = False  # the station's clock may be hours off: trust the server's check
    rig.command("identify", command_id="late-2", expires_at=rig.clock.wall() - 5)
    assert rig.uplink.command_results[-1].ok
    assert rig.feedback.signals == [Signal.IDENTIFY]


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        ("self_destruct", {}, "unknown command"),
        ("identify", {"duration_s": 0}, "duration_s"),
        ("identify", {"colour": "red"}, "colour"),
        ("set_setting", {}, "at least one"),
        ("set_setting", {"pool_size": 99}, "pool_size"),
    ],
)
def test_malformed_commands_are_refused_with_a_reason(
    rig: Rig, name: str, args: dict[str, object], reason: str
) -> None:
    rig.command(name, args)
    [result] = rig.uplink.command_results
    assert not result.ok and reason in result.detail["error"]


def test_set_setting_goes_through_the_workflow_and_is_recorded(tmp_path: Path) -> None:
    workflow = PoolWorkflow()
    r = build(tmp_path, workflow=workflow)
    try:
        r.command("set_setting", {"pool_size": 5, "test_kind": "rapid_antigen"})
        [result] = r.uplink.command_results
        assert result.ok and result.detail["applied"] == {
            "pool_size": 5,
            "test_kind": "rapid_antigen",
        }
        assert workflow.pool_size == 5
        r.station.tick()  # stored records go out with the backlog, from the loop
        [record] = r.uplink.published
        assert record.kind == "setting"
        assert record.data == {"pool_size": 5, "test_kind": "rapid_antigen"}
        assert [p.kind for p in r.outbox.pending()] == ["setting"]
        workflow.tube_open = True
        r.command("set_setting", {"pool_size": 3}, command_id="c-2")
        assert not r.uplink.command_results[-1].ok
        assert r.uplink.command_results[-1].detail["error"] == "close the open tube first"
        assert workflow.pool_size == 5
    finally:
        r.outbox.close()


def test_set_setting_is_refused_by_a_workflow_without_settings(rig: Rig) -> None:
    rig.command("set_setting", {"pool_size": 5})
    [result] = rig.uplink.command_results
    assert not result.ok and "no settings" in result.detail["error"]
    assert rig.uplink.published == []


def test_resync_sends_every_pending_record_again(rig: Rig) -> None:
    for code in ("A", "B", "C"):
        rig.station.handle(Scan(text=code, source="s"))
    rig.uplink.ack([rig.uplink.published[0].record_id])
    rig.uplink.published.clear()
    rig.command("resync")
    rig.station.tick()  # the backlog goes again from the start, from the loop
    assert [r.code for r in rig.uplink.published] == ["B", "C"]
    assert rig.uplink.command_results[-1].detail == {"resent": 2}


def test_restart_answers_then_stops_the_station_with_the_restart_code(rig: Rig) -> None:
    stop = threading.Event()
    runner = threading.Thread(target=rig.station.run, args=(stop,))
    runner.start()
    cmd = Command(command_id="r-1", name="restart", expires_at=rig.clock.wall() + 60)
    rig.station.submit(CommandReceived(cmd))
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert stop.is_set() and rig.station.exit_code == RESTART_EXIT_CODE
    assert rig.uplink.command_results[-1].detail == {"exit_code": RESTART_EXIT_CODE}


def test_diagnostics_bundle_has_config_without_secrets_logs_and_outbox_stats(rig: Rig) -> None:
    logger = logging.getLogger("swabline.test.diag")
    logger.addHandler(rig.logs)
    logger.setLevel(logging.INFO)
    try:
        logger.info("outbox full: scan %r refused", "079303001234|025123456|Nguyễn Thị Bình|...")
        logger.info("reconnected after 3 tries")
    finally:
        logger.removeHandler(rig.logs)
    rig.station.handle(Scan(text="A", source="s"))
    rig.command("diagnostics", {"log_lines": 10})
    [result] = rig.uplink.command_results
    bundle = result.detail
    assert result.ok
    assert bundle["config"]["station_id"] == "st-1"
    assert bundle["config"]["mqtt"]["password_file"] == "/etc/swabline/pw"
    assert bundle["outbox"]["depth"] == 1 and bundle["outbox"]["oldest_seq"] == 1
    assert bundle["logs"][-1].endswith("reconnected after 3 tries")
    text = json.dumps(bundle, ensure_ascii=False)
    assert "079303001234" not in text and "Nguyễn" not in text


def test_diagnostics_bundle_is_cut_to_fit_one_message(rig: Rig) -> None:
    logger = logging.getLogger("swabline.test.diag-big")
    logger.addHandler(rig.logs)
    logger.setLevel(logging.INFO)
    try:
        for i in range(500):
            logger.info("line %d %s", i, "x" * 300)
    finally:
        logger.removeHandler(rig.logs)
    rig.command("diagnostics", {"log_lines": 2000})
    [result] = rig.uplink.command_results
    assert len(encode(result)) <= MAX_PAYLOAD_BYTES
    assert result.detail["logs_truncated"] is True
    assert result.detail["logs"][-1].split(": ", 1)[1].startswith("line 499 ")


def test_redaction_and_scrubbing() -> None:
    tree = {"mqtt": {"password": "hunter2", "password_file": "/p", "api_token": "t", "port": 1}}
    hidden = {"password": "<redacted>", "password_file": "/p", "api_token": "<redacted>"}
    assert redact(tree) == {"mqtt": {**hidden, "port": 1}}
    assert scrub("scan '001090012345||TRAN VAN AN' refused, id 079303001234") == (
        "scan <code> refused, id <number>"
    )
