"""The ops process's own MQTT connection: publishes commands and watches births.

Separate from the ingest workers (which may run in other processes): it subscribes to every
station's retained ``status`` without a shared group, so it sees each birth (and, on
connecting, the retained birth of every station online now) and can send that station its
waiting commands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from protocol import PayloadError, Status, decode
from protocol.topics import StationTopic, TopicError, parse_station_topic, subscription

log = logging.getLogger(__name__)


class MqttOpsLink:
    """Wiring: connects as ``username`` to ``host:port`` with a clean session, as ``client_id``.

    ``on_birth(station_id)`` is called from paho's network thread for every birth: keep it quick.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str | None,
        client_id: str,
        on_birth: Callable[[str], None],
    ) -> None:
        self._host, self._port = host, port
        self._on_birth = on_birth
        self.connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30, clean_start=True)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        """QoS 1; while disconnected paho keeps it in memory and sends it on reconnection."""
        self._client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            log.error("broker refused the ops connection: %s", rc)
            return
        client.subscribe(subscription(StationTopic.STATUS), qos=1)
        self.connected.set()
        log.info("ops link connected to %s:%d", self._host, self._port)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        self.connected.clear()
        log.warning("ops link disconnected: %s", rc)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return
        try:
            station_id = parse_station_topic(msg.topic).station_id
            status = decode(Status, bytes(msg.payload))
        except (TopicError, PayloadError):
            return  # ingest keeps and reports malformed messages
        if status.state == "online":
            self._on_birth(station_id)
