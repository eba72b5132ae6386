"""Wiring of a station: args -> config -> real adapters -> ``Station.run()``.

The only place that builds hardware and network objects.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from agent import __version__
from agent.clock import SystemClock
from agent.config import StationConfig, load_config
from agent.errors import AgentError
from agent.feedback import LogFeedback, NoFeedback
from agent.identity import boot_id
from agent.mqtt import MqttUplink
from agent.outbox import TinyDbOutbox
from agent.ports import Feedback, ScanSource
from agent.sources import LineScanSource
from agent.station import RecordEveryScan, Station

log = logging.getLogger("swabline.agent")


def build_sources(config: StationConfig) -> list[ScanSource]:
    scanner = config.scanner
    match scanner.type:
        case "stdin":
            return [LineScanSource(scanner.path)]
    raise AgentError(f"scanner.type {scanner.type!r} is not supported")


def build_feedback(config: StationConfig) -> Feedback:
    return LogFeedback() if config.feedback.type == "log" else NoFeedback()


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
    try:
        return _run_station(config)
    except AgentError as exc:
        log.error("%s", exc)
        return 1


def _run_station(config: StationConfig) -> int:
    clock = SystemClock()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    feedback = build_feedback(config)
    outbox_config = config.outbox
    with TinyDbOutbox(
        outbox_config.path,
        capacity=outbox_config.capacity,
        warn_at_pct=outbox_config.warn_at_pct,
        wall=clock.wall,
        storage_args={"compact_bytes": outbox_config.compact_kib * 1024},
    ) as outbox:
        uplink = MqttUplink(
            station_id=config.station_id,
            host=config.mqtt.host,
            port=config.mqtt.port,
            username=config.mqtt.username or config.station_id,
            password=read_secret(config.mqtt.password_file),
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
        station = Station(
            station_id=config.station_id,
            boot_id=boot_id(),
            sources=build_sources(config),
            workflow=RecordEveryScan(),
            outbox=outbox,
            uplink=uplink,
            feedback=feedback,
            clock=clock,
            heartbeat_s=config.mqtt.heartbeat_s,
            resend_after_s=config.mqtt.resend_after_s,
            drain_per_s=config.mqtt.drain_per_s,
            max_unacked=config.mqtt.max_unacked,
            acked_retention_s=outbox_config.acked_retention_h * 3600,
        )
        log.info("station %s starting (%d records waiting)", config.station_id, len(outbox))
        try:
            station.run(stop)
        finally:
            uplink.close()
            feedback.close()
        log.info("station %s stopped (%d records waiting)", config.station_id, len(outbox))
    return 0
