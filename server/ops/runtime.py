"""Wiring of the ops threads in the server process: the MQTT link, the command dispatcher, the
monitor and the fleet snapshot kept warm for the fleet page. Alert changes go out through the
server's one outbound worker (``server.outbound``), started with the other background work.
``server/__main__.py`` starts one ``OpsRuntime``."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from sqlalchemy import Engine

from server.config import ServerConfig
from server.ops.commands import CommandDispatcher
from server.ops.link import MqttOpsLink
from server.ops.monitor import AlertNotifier, OpsMonitor

log = logging.getLogger(__name__)


class OpsRuntime:
    """Starts and stops the ops threads. ``dispatcher`` is what the web app hands commands to;
    ``wake_outbound`` (the outbound worker's wake-up) is called when an alert change is
    queued, so it goes out at once rather than at the worker's next poll."""

    def __init__(
        self,
        *,
        engine: Engine,
        config: ServerConfig,
        mqtt_password: str | None,
        wake_outbound: Callable[[], None] | None = None,
    ) -> None:
        self.wake_outbound = wake_outbound
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
            notify=AlertNotifier.from_config(config, on_enqueued=wake_outbound),
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
            ("ops-fleet", self.fleet_cache.keep_warm),
        ):
            thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("ops monitor and command dispatcher started")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.link.close()
