"""Wiring of a station: args -> config -> real adapters -> ``Station.run()``.

The only place that builds hardware and network objects.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from agent import __version__
from agent.clock import SystemClock
from agent.commands import CommandHandler
from agent.config import StationConfig, load_config
from agent.diagnostics import Diagnostics, RingLogHandler
from agent.errors import AgentError
from agent.feedback import LogFeedback, NoFeedback
from agent.health import (
    HealthProbe,
    HealthReading,
    LinuxHealthProbe,
    PiHealthProbe,
    probe_for_this_machine,
)
from agent.identity import boot_id
from agent.lab import LabReception
from agent.lock import outbox_lock
from agent.mqtt import MqttUplink
from agent.ops import OpsHooks
from agent.outbox import TinyDbOutbox
from agent.ports import Clock, Feedback, Outbox, ScanSource, Workflow
from agent.preflight import Prepared, prepare
from agent.session import SamplingWorkflow, WorkflowSettings
from agent.sources import LineScanSource
from agent.station import RecordEveryScan, Station
from agent.systemd import SystemdNotifier
from agent.telemetry import HeartbeatReporter
from protocol import CommandResult

log = logging.getLogger("swabline.agent")


def build_sources(config: StationConfig) -> list[ScanSource]:
    # Hardware modules are imported only for the scanner configured: a station without a camera
    # needs neither picamera2 nor libzbar.
    scanner = config.scanner
    try:
        match scanner.type:
            case "stdin":
                return [LineScanSource(scanner.path)]
            case "evdev":
                from agent.hw.evdev_source import EvdevScanSource

                return [
                    EvdevScanSource(
                        scanner.devices,
                        terminator=scanner.terminator,
                        gap_ms=scanner.gap_ms,
                        incomplete_ms=scanner.incomplete_ms,
                        max_length=scanner.max_length,
                        grab=scanner.grab,
                        poll_s=scanner.poll_s,
                    )
                ]
            case "serial":
                from agent.hw.serial_source import SerialScanSource

                return [
                    SerialScanSource(
                        scanner.port,
                        baudrate=scanner.baudrate,
                        max_length=scanner.max_length,
                        incomplete_ms=scanner.incomplete_ms,
                    )
                ]
            case "camera":
                from agent.hw.camera_source import (
                    PICAMERA2_MISSING,
                    CameraScanSource,
                    Picamera2Frames,
                    picamera2_available,
                )

                if not picamera2_available():
                    raise AgentError(PICAMERA2_MISSING)
                frames = Picamera2Frames(
                    width=scanner.width, height=scanner.height, fps=scanner.fps
                )
                return [
                    CameraScanSource(
                        frames=frames,
                        symbologies=scanner.symbologies,
                        fps=scanner.fps,
                        leave_after_s=scanner.leave_after_s,
                        repeat_after_s=scanner.repeat_after_s,
                    )
                ]
            case "replay":
                from agent.evtest import EvtestReplaySource

                return [
                    EvtestReplaySource(
                        Path(scanner.path),
                        terminator=scanner.terminator,
                        gap_ms=scanner.gap_ms,
                        incomplete_ms=scanner.incomplete_ms,
                        max_length=scanner.max_length,
                    )
                ]
    except ImportError as exc:
        raise AgentError(
            f"scanner.type {scanner.type!r} needs {exc.name or exc}, which is not installed "
            "(pip install 'swabline[pi]' or '[camera]'; the camera also needs apt's libzbar0)"
        ) from exc
    raise AgentError(f"scanner.type {scanner.type!r} is not supported")


def build_workflow(config: StationConfig, clock: Clock) -> Workflow:
    """Sampling (``[workflow]``), lab reception (``[lab]``), or raw scans (development)."""
    if config.lab is not None:
        return LabReception(
            tube_patterns=config.lab.tube_patterns, box_patterns=config.lab.box_patterns
        )
    if config.workflow is None:
        log.warning(
            "no [workflow] in the configuration: every scan is stored as a raw 'scan' record, "
            "without pairing checks (development only)"
        )
        return RecordEveryScan()
    return SamplingWorkflow(WorkflowSettings.from_config(config.workflow), now=clock.wall)


def build_feedback(config: StationConfig) -> Feedback:
    feedback = config.feedback
    if feedback.type == "gpio":
        try:
            from agent.hw.gpio_feedback import GpioFeedback
        except ImportError as exc:
            raise AgentError(
                f"feedback.type 'gpio' needs {exc.name or exc}: pip install 'swabline[pi]'"
            ) from exc
        return GpioFeedback(
            leds=feedback.leds,
            green_pin=feedback.green_pin,
            red_pin=feedback.red_pin,
            amber_pin=feedback.amber_pin,
            blue_pin=feedback.blue_pin,
            active_high=feedback.active_high,
            buzzer=feedback.buzzer,
            buzzer_pin=feedback.buzzer_pin,
        )
    return LogFeedback() if feedback.type == "log" else NoFeedback()


def build_probe(config: StationConfig) -> HealthProbe:
    disk = config.outbox.path.parent
    match config.health.probe:
        case "pi":
            return PiHealthProbe(disk_path=disk)
        case "linux":
            return LinuxHealthProbe(disk_path=disk)
        case "none":
            return _NoProbe()
    return probe_for_this_machine(disk)


class _NoProbe:
    def read(self) -> HealthReading:
        return HealthReading()


def build_ops(
    config: StationConfig,
    *,
    clock: Clock,
    outbox: Outbox,
    feedback: Feedback,
    workflow: object,
    boot: str,
    scanners: int,
    publish_result: Callable[[CommandResult], None],
    logs: RingLogHandler,
) -> OpsHooks:
    """Heartbeat telemetry and remote commands for ``Station(ops=...)``."""
    probe = build_probe(config)
    reporter = HeartbeatReporter(
        clock=clock,
        outbox=outbox,
        probe=probe,
        agent_version=__version__,
        boot_id=boot,
        heartbeat_s=config.mqtt.heartbeat_s,
        scanners_expected=scanners,
        timezone=config.health.timezone,
    )
    diagnostics = Diagnostics(
        config=config,
        outbox=outbox,
        logs=logs,
        probe=probe,
        clock=clock,
        agent_version=__version__,
        extra=lambda: {"heartbeat": reporter.fields()},
    )
    commands = CommandHandler(
        workflow=workflow,
        feedback=feedback,
        clock=clock,
        publish_result=publish_result,
        diagnostics=diagnostics.bundle,
    )
    return OpsHooks(reporter=reporter, commands=commands)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        prepared = prepare(config)  # secrets, CA, outbox folder: before anything starts
    except AgentError as exc:
        print(f"swabline agent: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{args.config}: OK (station {config.station_id})")
        return 0
    logs = RingLogHandler(capacity=config.health.log_lines)
    logging.getLogger().addHandler(logs)
    try:
        return _run_station(config, prepared, logs)
    except AgentError as exc:
        log.error("%s", exc)
        return 1


def _run_station(config: StationConfig, prepared: Prepared, logs: RingLogHandler) -> int:
    clock = SystemClock()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    feedback = build_feedback(config)
    outbox_config = config.outbox
    with (
        outbox_lock(outbox_config.path),
        TinyDbOutbox(
            outbox_config.path,
            capacity=outbox_config.capacity,
            warn_at_pct=outbox_config.warn_at_pct,
            wall=clock.wall,
            storage_args={"compact_bytes": outbox_config.compact_kib * 1024},
        ) as outbox,
    ):
        uplink = MqttUplink(
            station_id=config.station_id,
            host=config.mqtt.host,
            port=config.mqtt.port,
            username=config.mqtt.username or config.station_id,
            password=prepared.mqtt_password,
            ca_file=str(config.mqtt.ca_file) if config.mqtt.ca_file else None,
            keepalive_s=config.mqtt.keepalive_s,
            max_inflight=config.mqtt.max_inflight,
            reconnect_min_s=config.mqtt.reconnect_min_s,
            reconnect_max_s=config.mqtt.reconnect_max_s,
            connect_timeout_s=config.mqtt.connect_timeout_s,
            next_bd_seq=lambda: outbox.next_counter("bd_seq"),
            clock_wall=clock.wall,
            agent_version=__version__,
        )
        notifier = SystemdNotifier(
            notify_socket=os.environ.get("NOTIFY_SOCKET"),
            watchdog_usec=os.environ.get("WATCHDOG_USEC"),
            status=lambda: (
                f"{'online' if uplink.connected else 'offline'}, "
                f"{len(outbox)} records waiting for the server"
            ),
        )
        boot = boot_id()
        sources = build_sources(config)
        workflow = build_workflow(config, clock)
        station = Station(
            on_tick=notifier,
            station_id=config.station_id,
            boot_id=boot,
            sources=sources,
            workflow=workflow,
            outbox=outbox,
            uplink=uplink,
            feedback=feedback,
            clock=clock,
            heartbeat_s=config.mqtt.heartbeat_s,
            resend_after_s=config.mqtt.resend_after_s,
            resend_max_s=config.mqtt.resend_max_s,
            history=outbox,
            drain_per_s=config.mqtt.drain_per_s,
            max_unacked=config.mqtt.max_unacked,
            acked_retention_s=outbox_config.acked_retention_h * 3600,
            ops=build_ops(
                config,
                clock=clock,
                outbox=outbox,
                feedback=feedback,
                workflow=workflow,
                boot=boot,
                scanners=len(sources),
                publish_result=uplink.publish_command_result,
                logs=logs,
            ),
        )
        log.info("station %s starting (%d records waiting)", config.station_id, len(outbox))
        try:
            station.run(stop)
        finally:
            notifier.stopping()
            uplink.close()
            feedback.close()
            notifier.close()
        log.info("station %s stopped (%d records waiting)", config.station_id, len(outbox))
    return station.exit_code
