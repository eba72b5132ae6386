"""The station's uplink to the broker, over MQTT 5 with paho-mqtt."""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import UplinkError
from agent.ports import Acked, CommandReceived, Connected, Disconnected, UplinkSink
from protocol import (
    Ack,
    Command,
    CommandResult,
    Heartbeat,
    PayloadError,
    Record,
    Status,
    decode,
    encode,
)
from protocol.topics import StationTopic, topic

log = logging.getLogger(__name__)


class MqttUplink:
    """Publishes records with QoS 1 and turns the server's acknowledgements into events.

    Wiring: connects to ``host:port`` as ``username`` (the broker binds every topic to it), over
    TLS when ``ca_file`` is given. Announces itself with a retained birth on its status topic and
    leaves a retained death as its will; both carry the birth/death sequence number ``bd_seq``,
    drawn from ``next_bd_seq`` once per connection, so the server can ignore a stale death.

    Records are published pipelined (up to ``max_inflight`` unacknowledged at the broker). A
    PUBACK only means the broker has the message: the station forgets a record only on ``Acked``.
    """

    def __init__(
        self,
        *,
        station_id: str,
        host: str,
        port: int,
        username: str,
        password: str | None,
        next_bd_seq: Callable[[], int],
        clock_wall: Callable[[], float],
        agent_version: str,
        ca_file: str | None = None,
        keepalive_s: int = 30,
        max_inflight: int = 100,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.station_id = station_id
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self._next_bd_seq = next_bd_seq
        self._wall = clock_wall
        self._version = agent_version
        self._sink: UplinkSink | None = None
        self._connected = threading.Event()
        self._records_topic = topic(station_id, StationTopic.RECORDS)
        self._status_topic = topic(station_id, StationTopic.STATUS)
        self._heartbeat_topic = topic(station_id, StationTopic.HEARTBEAT)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=station_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(username, password)
        if ca_file:
            client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(int(reconnect_min_s), int(reconnect_max_s))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self._bd_seq = 0
        self._arm_will()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, sink: UplinkSink) -> None:
        self._sink = sink
        try:
            self._client.connect_async(self._host, self._port, self._keepalive)
        except (OSError, ValueError) as exc:
            raise UplinkError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        self._client.loop_start()

    def publish_record(self, record: Record) -> None:
        self._client.publish(self._records_topic, encode(record), qos=1)

    def publish_heartbeat(self, heartbeat: Heartbeat) -> None:
        self._client.publish(self._heartbeat_topic, encode(heartbeat), qos=0)

    def publish_command_result(self, result: CommandResult) -> None:
        """Answer a command (QoS 1; queued in memory while disconnected)."""
        self._client.publish(
            topic(self.station_id, StationTopic.COMMAND_RESULTS), encode(result), qos=1
        )

    def close(self) -> None:
        """Publish a retained death ourselves (a clean disconnect suppresses the will)."""
        if self._sink is None:
            return
        if self._connected.is_set():
            info = self._client.publish(
                self._status_topic, self._status("offline"), qos=1, retain=True
            )
            # If the connection dropped meanwhile, the broker sends our will instead.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()
        self._sink = None

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        return encode(
            Status(state=state, bd_seq=self._bd_seq, time=self._wall(), agent_version=self._version)
        )

    def _arm_will(self) -> None:
        self._bd_seq = self._next_bd_seq()
        self._client.will_set(self._status_topic, self._status("offline"), qos=1, retain=True)

    def _emit(self, event: Any) -> None:
        if self._sink is not None:
            self._sink(event)

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            log.warning("broker refused connection: %s", rc)
            self._emit(Disconnected(reason=str(rc)))
            return
        client.subscribe(
            [
                (topic(self.station_id, StationTopic.ACKS), 1),
                (topic(self.station_id, StationTopic.COMMANDS), 1),
            ]
        )
        client.publish(self._status_topic, self._status("online"), qos=1, retain=True)
        self._connected.set()
        self._emit(Connected())

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._arm_will()  # the next connection gets a new bd_seq, in its birth and its will
        if was:
            self._emit(Disconnected(reason=str(rc)))

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        try:
            if kind == StationTopic.ACKS.value:
                ack = decode(Ack, bytes(msg.payload))
                self._emit(Acked(tuple(ack.record_ids), server_time=ack.server_time))
            elif kind == StationTopic.COMMANDS.value:
                self._emit(CommandReceived(decode(Command, bytes(msg.payload))))
        except PayloadError as exc:
            log.warning("ignoring malformed %s message: %s", kind, exc.reason)
