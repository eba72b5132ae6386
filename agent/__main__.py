"""Wiring of a station: args -> config -> real adapters -> ``Station.run()``.

The only place that builds hardware and network objects.
"""

from __future__ import annotations

import argparse
import logging
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
from agent.mqtt import MqttUplink
from agent.ops import OpsHooks
from agent.outbox import TinyDbOutbox
from agent.ports import Clock, Feedback, Outbox, ScanSource
from agent.sources import LineScanSource
from agent.station import RecordEveryScan, Station
from agent.telemetry import HeartbeatReporter
from protocol import CommandResult

log = logging.getLogger("swabline.agent")


def build_sources(config: StationConfig) -> list[ScanSource]:
    scanner = config.scanner
    match scanner.type:
        case "stdin":
            return [LineScanSource(scanner.path)]
    raise AgentError(f"scanner.type {scanner.type!r} is not supported")


def build_feedback(config: StationConfig) -> Feedback:
    return LogFeedback() if config.feedback.type == "log" else NoFeedback()


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


def read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AgentError(f"cannot read mqtt.password_file {path}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except AgentError as exc:
        print(f"swabline agent: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"{args.config}: OK (station {config.station_id})")
        return 0
    logs = RingLogHandler(capacity=config.health.log_lines)
    logging.getLogger().addHandler(logs)
    try:
        return _run_station(config, logs)
    except AgentError as exc:
        log.error("%s", exc)
        return 1


def _run_station(config: StationConfig, logs: RingLogHandler) -> int:
    clock = SystemClock()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    feedback = build_feedback(config)
    with TinyDbOutbox(config.outbox.path, capacity=config.outbox.capacity) as outbox:
        uplink = MqttUplink(
            station_id=config.station_id,
            host=config.mqtt.host,
            port=config.mqtt.port,
            username=config.mqtt.username or config.station_id,
            password=read_secret(config.mqtt.password_file),
            ca_file=str(config.mqtt.ca_file) if config.mqtt.ca_file else None,
            keepalive_s=config.mqtt.keepalive_s,
            max_inflight=config.mqtt.max_inflight,
            next_bd_seq=lambda: outbox.next_counter("bd_seq"),
            clock_wall=clock.wall,
            agent_version=__version__,
        )
        boot = boot_id()
        sources = build_sources(config)
        workflow = RecordEveryScan()
        station = Station(
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
            uplink.close()
            feedback.close()
        log.info("station %s stopped (%d records waiting)", config.station_id, len(outbox))
    return station.exit_code
