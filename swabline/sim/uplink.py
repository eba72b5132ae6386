"""A station uplink driven by an asyncio event loop, so one process can hold 10,000 stations.

``AsyncioMqttUplink`` behaves as ``agent.mqtt.MqttUplink`` does: a fresh paho-mqtt 2.x client
(MQTT 5, clean session) for every connection, so paho never resends anything from a dead
connection; the same client id, in-flight window, subscriptions (acks, commands, sync), retained
birth and will carrying a new ``bd_seq`` per connection; reconnection after
``agent.backoff.Backoff`` (jittered, capped, reset only once a connection proved itself with
an acknowledgement or a keepalive interval up); an attempt with no CONNACK within the connect
timeout counts as failed. The difference is the I/O: instead of one network thread per client,
each client's socket is served by the event loop through paho's external-loop callbacks
(``on_socket_open``, ``on_socket_register_write``, ...). One thread serves every station.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import Backoff
from agent.ports import Acked, CommandReceived, Connected, Disconnected, Synced, UplinkSink
from protocol import Ack, Command, Heartbeat, PayloadError, Record, Status, Sync, decode, encode
from protocol.topics import StationTopic, topic

log = logging.getLogger(__name__)


class _PreconnectedClient(mqtt.Client):
    """A paho client that takes a TCP socket the event loop connected beforehand.

    paho's ``connect()`` opens its socket with a blocking ``socket.create_connection``; during a
    reconnect storm a full listen backlog makes that block the whole loop for a SYN retry (1 s
    and more). Connecting with ``loop.sock_connect`` first keeps the loop free. This overrides a
    private method of paho-mqtt 2.x (pinned ``<3`` in pyproject.toml); the simulator's
    integration tests exercise it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preconnected: socket.socket | None = None

    def _create_socket_connection(self) -> socket.socket:
        sock, self.preconnected = self.preconnected, None
        if sock is None:
            return super()._create_socket_connection()
        return sock


class ConnectGate:
    """Caps how many TCP + MQTT handshakes are in progress at once across the fleet.

    Real stations are separate machines; thousands of simultaneous SYNs from one process would
    mostly measure the kernel's SYN retry timers once the broker's listen backlog is full.
    """

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)


class _Connection:
    """One attempt to be connected: a fresh paho client, used once and thrown away."""

    def __init__(self, client: _PreconnectedClient, bd_seq: int) -> None:
        self.client = client
        self.bd_seq = bd_seq
        self.up = False
        self.sock: Any = None
        self.done = asyncio.Event()  # refused, lost or closed
        self.answered = asyncio.Event()  # CONNACK came (either way), or the socket closed
        self.acked = False  # an acknowledgement came on this connection


class AsyncioMqttUplink:
    """The ``Uplink`` of a simulated station, on the running asyncio loop.

    ``drop()`` cuts the TCP connection without an MQTT DISCONNECT, as a lost network would (the
    broker then publishes the will); ``go_offline()``/``go_online()`` keep it down for an
    outage. Not thread-safe: everything runs on the loop's thread.
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
        gate: ConnectGate,
        rng: random.Random,
        on_change: Callable[[AsyncioMqttUplink, bool], None] | None = None,
        keepalive_s: int = 30,
        max_inflight: int = 100,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.station_id = station_id
        self._host, self._port, self._keepalive = host, port, keepalive_s
        self._username, self._password = username, password
        self._max_inflight = max_inflight
        self._connect_timeout = connect_timeout_s
        self._next_bd_seq = next_bd_seq
        self._wall = clock_wall
        self._version = agent_version
        self._gate = gate
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s, rng=rng)
        self._on_change = on_change
        self._sink: UplinkSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._want_online = True
        self._online = asyncio.Event()
        self._closing = False
        self._records_topic = topic(station_id, StationTopic.RECORDS)
        self._status_topic = topic(station_id, StationTopic.STATUS)
        self._heartbeat_topic = topic(station_id, StationTopic.HEARTBEAT)
        self.attempts = 0
        self.published = 0

    # --- Uplink protocol -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.up

    def start(self, sink: UplinkSink) -> None:
        """Start the connection manager (needs a running loop)."""
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        if self._want_online:
            self._online.set()
        self._task = self._loop.create_task(self._run())

    def publish_record(self, record: Record) -> None:
        conn = self._conn
        if conn is not None and conn.up:
            conn.client.publish(self._records_topic, encode(record), qos=1)
            self.published += 1

    def publish_heartbeat(self, heartbeat: Heartbeat) -> None:
        conn = self._conn
        if conn is not None and conn.up:
            conn.client.publish(self._heartbeat_topic, encode(heartbeat), qos=0)

    def close(self) -> None:
        """Publish a retained death ourselves and disconnect (a clean disconnect has no will)."""
        self._closing = True
        conn = self._conn
        if conn is not None and conn.up:
            conn.client.publish(
                self._status_topic, self._status("offline", conn.bd_seq), qos=1, retain=True
            )
            conn.client.disconnect()
            with contextlib.suppress(OSError):
                conn.client.loop_write()  # flush now: the loop stops serving this client
        if conn is not None:
            self._teardown(conn)
        if self._task is not None:
            self._task.cancel()
        self._sink = None

    # --- simulation controls ---------------------------------------------------------------

    def misc(self) -> None:
        """paho's periodic work (keepalive pings); call about once a second."""
        conn = self._conn
        if conn is not None and conn.sock is not None:
            conn.client.loop_misc()

    def drop(self) -> None:
        """Cut the TCP connection abruptly; the station reconnects after its backoff."""
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def go_offline(self) -> None:
        """Lose the network until ``go_online``: no reconnect attempts meanwhile."""
        self._want_online = False
        self._online.clear()
        self.drop()

    def go_online(self) -> None:
        """The network is back: the next attempt starts now, with the backoff reset."""
        self._want_online = True
        self._backoff.reset()
        self._online.set()

    # --- the connection manager (a task per station) ---------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            await self._online.wait()
            await self._connect_once()
            if self._closing:
                return
            if self._want_online:
                # Wait out the backoff, unless the network "comes back" meanwhile (go_online).
                self._online.clear()
                delay = self._backoff.next_delay()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._online.wait(), delay)
                if self._want_online:
                    self._online.set()

    async def _connect_once(self) -> None:
        self.attempts += 1
        loop = asyncio.get_running_loop()
        conn = self._new_connection()
        async with self._gate.semaphore:
            if self._closing or not self._want_online:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(
                    loop.sock_connect(sock, (self._host, self._port)), self._connect_timeout
                )
            except (OSError, TimeoutError) as exc:
                sock.close()
                log.debug("%s: cannot connect: %s", self.station_id, exc)
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.client.preconnected = sock
            try:
                conn.client.connect(self._host, self._port, self._keepalive)
            except (OSError, ValueError) as exc:
                log.debug("%s: cannot connect: %s", self.station_id, exc)
                self._teardown(conn)
                return
            # Hold the gate until CONNACK (or the timeout): a bounded number of handshakes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._established(conn), self._connect_timeout)
        if not conn.up:
            self._teardown(conn)
            return
        up_at = loop.time()
        await conn.done.wait()
        # As the agent does: the backoff starts over only after a connection that proved
        # itself (an acknowledgement, or up for a keepalive interval); one dropped right after
        # its CONNACK counts as a failed attempt, so a flapping broker is not hammered.
        if conn.acked or loop.time() - up_at >= self._keepalive:
            self._backoff.reset()
        self._teardown(conn)

    async def _established(self, conn: _Connection) -> None:
        await conn.answered.wait()

    def _new_connection(self) -> _Connection:
        client = _PreconnectedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.station_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.username_pw_set(self._username, self._password)
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
            conn.done.set()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            if conn is self._conn:
                if msg.topic.endswith("/" + StationTopic.ACKS.value):
                    conn.acked = True
                self._on_message(msg)

        def on_socket_open(_c: mqtt.Client, _u: object, sock: Any) -> None:
            assert self._loop is not None
            conn.sock = sock
            self._loop.add_reader(sock, client.loop_read)

        def on_socket_close(_c: mqtt.Client, _u: object, sock: Any) -> None:
            if self._loop is not None:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
            conn.sock = None
            conn.done.set()
            conn.answered.set()

        def on_register_write(_c: mqtt.Client, _u: object, sock: Any) -> None:
            if self._loop is not None:
                self._loop.add_writer(sock, client.loop_write)

        def on_unregister_write(_c: mqtt.Client, _u: object, sock: Any) -> None:
            if self._loop is not None:
                self._loop.remove_writer(sock)

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.on_socket_open = on_socket_open
        client.on_socket_close = on_socket_close
        client.on_socket_register_write = on_register_write
        client.on_socket_unregister_write = on_unregister_write
        return conn

    def _teardown(self, conn: _Connection) -> None:
        was_up = conn.up
        conn.up = False
        if self._conn is conn:
            self._conn = None
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError, ValueError):
                conn.client.loop_read()  # paho sees the end and closes its socket
            if conn.sock is not None and self._loop is not None:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
                sock.close()
                conn.sock = None
        conn.done.set()
        conn.answered.set()
        if was_up:
            if self._on_change is not None:
                self._on_change(self, False)
            self._emit(Disconnected(reason="connection closed"))

    # --- paho callbacks (mirror agent.mqtt.MqttUplink) ------------------------------------

    def _on_connect(self, conn: _Connection, rc: ReasonCode) -> None:
        if rc.is_failure:
            log.warning("%s: broker refused the connection: %s", self.station_id, rc)
            conn.done.set()
            conn.answered.set()
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
        conn.answered.set()
        if self._on_change is not None:
            self._on_change(self, True)
        self._emit(Connected())

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        try:
            if kind == StationTopic.ACKS.value:
                self._emit(Acked(tuple(decode(Ack, bytes(msg.payload)).record_ids)))
            elif kind == StationTopic.SYNC.value:
                self._emit(Synced(decode(Sync, bytes(msg.payload)).max_seq))
            elif kind == StationTopic.COMMANDS.value:
                self._emit(CommandReceived(decode(Command, bytes(msg.payload))))
        except PayloadError as exc:
            log.warning("%s: ignoring malformed %s message: %s", self.station_id, kind, exc.reason)

    def _status(self, state: Literal["online", "offline"], bd_seq: int) -> bytes:
        return encode(
            Status(state=state, bd_seq=bd_seq, time=self._wall(), agent_version=self._version)
        )

    def _emit(self, event: Any) -> None:
        sink = self._sink
        if sink is not None:
            sink(event)
