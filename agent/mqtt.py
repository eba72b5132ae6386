"""The station's uplink to the broker, over MQTT 5 with paho-mqtt."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import Backoff
from agent.ports import Acked, CommandReceived, Connected, Disconnected, Synced, UplinkSink
from protocol import (
    Ack,
    Command,
    CommandResult,
    Heartbeat,
    PayloadError,
    Record,
    Status,
    Sync,
    decode,
    encode,
)
from protocol.topics import StationTopic, topic

log = logging.getLogger(__name__)


class _Connection:
    """One attempt to be connected: a fresh paho client, used once and thrown away."""

    def __init__(self, client: mqtt.Client, bd_seq: int) -> None:
        self.client = client
        self.bd_seq = bd_seq
        self.up = False
        self.lost = threading.Event()
        self.established = threading.Event()
        """Set when the attempt is over: accepted (``up``), refused or lost."""
        self.acked = threading.Event()
        """Set when the server's acknowledgement came through this connection."""


class MqttUplink:
    """Publishes records with QoS 1 and turns the server's acknowledgements into events.

    Wiring: connects to ``host:port`` as ``username`` (the broker binds every topic to it), over
    TLS when ``ca_file`` is given. Announces itself with a retained birth on its status topic and
    leaves a retained death as its will; both carry the birth/death sequence number ``bd_seq``,
    drawn from ``next_bd_seq`` once per connection, so the server can ignore a stale death.

    Records are published pipelined (up to ``max_inflight`` unacknowledged at the broker). A
    PUBACK only means the broker has the message: the station forgets a record only on ``Acked``.

    Reconnection is driven here, not by paho: each connection uses a fresh paho client with a
    clean session, so nothing paho queued on a dead connection is sent again by paho (the
    station resends what the server did not acknowledge, once, in order). Between attempts it
    waits ``Backoff(reconnect_min_s, reconnect_max_s)`` (jittered, capped); a connection that
    gets no CONNACK within ``connect_timeout_s`` counts as failed. The backoff starts over only
    once a connection has proved itself: it stayed up for ``keepalive_s`` or carried an
    acknowledgement from the server. A connection the broker accepts and then drops at once (a
    broker or proxy in trouble, a client id taken over) counts as failed too, so a flapping
    link is retried less and less often instead of at ``reconnect_min_s`` forever.
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
        reconnect_max_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.station_id = station_id
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self._username, self._password, self._ca_file = username, password, ca_file
        self._max_inflight = max_inflight
        self._connect_timeout = connect_timeout_s
        self._next_bd_seq = next_bd_seq
        self._wall = clock_wall
        self._version = agent_version
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s, rng=rng)
        self._sink: UplinkSink | None = None
        self._conn: _Connection | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._records_topic = topic(station_id, StationTopic.RECORDS)
        self._status_topic = topic(station_id, StationTopic.STATUS)
        self._heartbeat_topic = topic(station_id, StationTopic.HEARTBEAT)
        self.attempts = 0

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.up

    @property
    def failures(self) -> int:
        """Connection attempts that failed in a row (the reconnect backoff's count); back to 0
        once a connection has proved itself."""
        return self._backoff.failures

    def start(self, sink: UplinkSink) -> None:
        self._sink = sink
        self._thread = threading.Thread(target=self._run, name="mqtt-uplink", daemon=True)
        self._thread.start()

    def publish_record(self, record: Record) -> None:
        conn = self._conn
        if conn is not None and conn.up:
            # If the connection is dying, paho drops the message with its client; the record
            # stays in the outbox and goes again after the next connection.
            conn.client.publish(self._records_topic, encode(record), qos=1)

    def publish_heartbeat(self, heartbeat: Heartbeat) -> None:
        conn = self._conn
        if conn is not None and conn.up:
            conn.client.publish(self._heartbeat_topic, encode(heartbeat), qos=0)

    def publish_command_result(self, result: CommandResult) -> None:
        """Answer a command (QoS 1). Dropped while disconnected: the server sends the command
        again after the next birth until it is answered."""
        conn = self._conn
        if conn is not None and conn.up:
            conn.client.publish(
                topic(self.station_id, StationTopic.COMMAND_RESULTS), encode(result), qos=1
            )

    def close(self) -> None:
        """Publish a retained death ourselves (a clean disconnect suppresses the will)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        self._sink = None

    # -- the connection manager (its own thread) ------------------------------------------

    def _run(self) -> None:
        while not self._closing.is_set():
            self._connect_once()
            if self._closing.is_set():
                break
            delay = self._backoff.next_delay()
            log.info("reconnecting to %s:%d in %.1f s", self._host, self._port, delay)
            self._closing.wait(delay)

    def _connect_once(self) -> None:
        self.attempts += 1
        try:
            conn = self._new_connection()
        except OSError as exc:  # the bd_seq counter could not be stored
            log.error("cannot prepare a connection: %s", exc)
            return
        client = conn.client
        try:
            client.connect(self._host, self._port, self._keepalive)
        except (OSError, ValueError) as exc:
            log.warning("cannot connect to %s:%d: %s", self._host, self._port, exc)
            return
        client.loop_start()
        try:
            if not conn.established.wait(self._connect_timeout):
                log.warning("no answer from the broker within %.0f s", self._connect_timeout)
                return
            if not conn.up:
                return  # refused; on_connect logged why
            up_at = time.monotonic()
            while not conn.lost.is_set() and not self._closing.wait(0.2):
                if self._backoff.failures and self._proved(conn, up_at):
                    self._backoff.reset()
            if self._proved(conn, up_at):
                self._backoff.reset()
            if self._closing.is_set() and not conn.lost.is_set():
                self._say_goodbye(conn)
        finally:
            self._teardown(conn)

    def _proved(self, conn: _Connection, up_at: float) -> bool:
        """Whether a connection has shown it works: long enough up, or an acknowledgement."""
        return conn.acked.is_set() or time.monotonic() - up_at >= self._keepalive

    def _new_connection(self) -> _Connection:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.station_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.username_pw_set(self._username, self._password)
        if self._ca_file:
            client.tls_set(ca_certs=self._ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.connect_timeout = self._connect_timeout
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(0)
        conn = _Connection(client, self._next_bd_seq())
        client.will_set(
            self._status_topic, self._status("offline", conn.bd_seq), qos=1, retain=True
        )

        def on_connect(c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
            self._on_connect(conn, rc)

        def on_disconnect(
            _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object
        ) -> None:
            self._on_disconnect(conn, rc)

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if conn is self._conn:
                self._on_message(conn, msg)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        return conn

    def _say_goodbye(self, conn: _Connection) -> None:
        info = conn.client.publish(
            self._status_topic, self._status("offline", conn.bd_seq), qos=1, retain=True
        )
        # If the connection drops meanwhile, the broker sends our will instead.
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout=2.0)
        conn.client.disconnect()
        conn.lost.wait(2.0)

    def _teardown(self, conn: _Connection) -> None:
        was_up = conn.up
        conn.up = False
        if self._conn is conn:
            self._conn = None
        sock = conn.client.socket()
        if isinstance(sock, socket.socket):  # also TLS sockets
            # Wake paho's loop out of a stalled connection; it then ends (no auto-reconnect).
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        conn.client.loop_stop()
        if was_up:
            self._emit(Disconnected(reason="connection closed"))

    # -- paho callbacks (paho's thread) ---------------------------------------------------

    def _on_connect(self, conn: _Connection, rc: ReasonCode) -> None:
        if rc.is_failure:
            log.warning("broker refused the connection: %s", rc)
            conn.established.set()
            conn.lost.set()
            self._emit(Disconnected(reason=str(rc)))
            return
        conn.client.subscribe(
            [
                (topic(self.station_id, StationTopic.ACKS), 1),
                (topic(self.station_id, StationTopic.COMMANDS), 1),
                (topic(self.station_id, StationTopic.SYNC), 1),
            ]
        )
        conn.client.publish(
            self._status_topic, self._status("online", conn.bd_seq), qos=1, retain=True
        )
        self._conn = conn
        conn.up = True
        conn.established.set()
        log.info("connected to %s:%d (bd_seq %d)", self._host, self._port, conn.bd_seq)
        self._emit(Connected())

    def _on_disconnect(self, conn: _Connection, rc: ReasonCode) -> None:
        if conn.up and not self._closing.is_set():
            log.warning("connection to the broker lost: %s", rc)
        elif not conn.up:
            log.warning("the broker closed the connection before accepting it: %s", rc)
        conn.lost.set()
        conn.established.set()  # the attempt is over, whatever its outcome

    def _on_message(self, conn: _Connection, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        try:
            if kind == StationTopic.ACKS.value:
                ack = decode(Ack, bytes(msg.payload))
                conn.acked.set()
                self._emit(Acked(tuple(ack.record_ids), server_time=ack.server_time))
            elif kind == StationTopic.SYNC.value:
                self._emit(Synced(decode(Sync, bytes(msg.payload)).max_seq))
            elif kind == StationTopic.COMMANDS.value:
                self._emit(CommandReceived(decode(Command, bytes(msg.payload))))
        except PayloadError as exc:
            log.warning("ignoring malformed %s message: %s", kind, exc.reason)

    def _status(self, state: Literal["online", "offline"], bd_seq: int) -> bytes:
        return encode(
            Status(state=state, bd_seq=bd_seq, time=self._wall(), agent_version=self._version)
        )

    def _emit(self, event: Any) -> None:
        sink = self._sink
        if sink is not None:
            sink(event)
