"""Wiring of the ops threads in the server process: the MQTT link, the command dispatcher, the
monitor, the outbound worker and the fleet snapshot kept warm for the fleet page.
``server/__main__.py`` starts one ``OpsRuntime``."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from sqlalchemy import Engine

from server.config import ServerConfig
from server.errors import ConfigError
from server.ops.commands import CommandDispatcher
from server.ops.link import MqttOpsLink
from server.ops.monitor import OpsMonitor, WebhookNotifier
from server.outbound import OutboundHook, OutboundWorker, RetryPolicy, Target, WebhookHook

log = logging.getLogger(__name__)

ALERTS_TARGET = "alerts"


def read_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read alerts.webhook_secret_file {path}: {exc.strerror}"
        ) from None


def alert_target(config: ServerConfig) -> Target | None:
    if not config.alerts.webhook_url:
        return None
    return Target(
        ALERTS_TARGET, config.alerts.webhook_url, read_key(config.alerts.webhook_secret_file)
    )


def retry_policy(config: ServerConfig) -> RetryPolicy:
    o = config.outbound
    return RetryPolicy(
        max_attempts=o.max_attempts,
        retry_min_s=o.retry_min_s,
        retry_max_s=o.retry_max_s,
    )


class OpsRuntime:
    """Starts and stops the ops threads. ``dispatcher`` is what the web app hands commands to."""

    def __init__(self, *, engine: Engine, config: ServerConfig, mqtt_password: str | None) -> None:
        target = alert_target(config)
        hooks: dict[str, OutboundHook] = {}
        if target is not None:
            hooks[target.name] = WebhookHook(
                url=target.url, secret=target.secret, timeout_s=config.outbound.timeout_s
            )
        self.outbound = OutboundWorker(engine=engine, hooks=hooks, policy=retry_policy(config))
        self.link = MqttOpsLink(
            host=config.mqtt.host,
            port=config.mqtt.port,
            username=config.mqtt.username,
            password=mqtt_password,
            client_id=f"swabline-ops-{socket.gethostname()[:20]}-{os.getpid()}",
            on_birth=lambda sid: self.dispatcher.on_birth(sid),
        )
        self.dispatcher = CommandDispatcher(engine=engine, publish=self.link.publish)
        self.monitor = OpsMonitor(
            engine=engine,
            config=config,
            notify=WebhookNotifier(target, on_enqueued=self.outbound.wake.set),
            on_pass=lambda _p: self.dispatcher.refresh(),
        )
        from server.web.ops import FleetCache  # the web layer imports this module

        self.fleet_cache = FleetCache(engine, config)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.link.start()
        for name, target in (
            ("ops-dispatch", self.dispatcher.run),
            ("ops-monitor", self.monitor.run),
            ("ops-outbound", self.outbound.run),
            ("ops-fleet", self.fleet_cache.keep_warm),
        ):
            thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("ops monitor, command dispatcher and outbound worker started")

    def stop(self) -> None:
        self._stop.set()
        self.outbound.wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.link.close()
