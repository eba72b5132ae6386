"""The MQTT uplink against a real Mosquitto: events, reconnection, no resend by paho."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.identity import uuid7
from agent.mqtt import MqttUplink
from agent.ports import Acked, Connected, Disconnected, Synced, UplinkEvent
from protocol import Ack, Record, Status, Sync, decode, encode
from protocol.topics import StationTopic, topic
from swabline.broker import SERVER_USER, Broker
from tests.integration.harness import wait_for
from tests.integration.proxy import TcpProxy

pytestmark = pytest.mark.integration


class Server:
    """A stand-in for the server: sees what stations publish, can answer them."""

    def __init__(self, broker: Broker) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="test-server", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(SERVER_USER, broker.users[SERVER_USER])
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("swabline/v1/stations/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def records(self) -> list[Record]:
        with self._lock:
            return [decode(Record, p) for t, p in self.messages if t.endswith("/records")]

    def statuses(self) -> list[Status]:
        with self._lock:
            return [decode(Status, p) for t, p in self.messages if t.endswith("/status") and p]

    def send(self, station_id: str, kind: StationTopic, payload: bytes) -> None:
        self.client.publish(topic(station_id, kind), payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def record(seq: int) -> Record:
    return Record(
        record_id=uuid7(),
        station_id="st-1",
        seq=seq,
        boot_id="boot",
        wall_time=1.0,
        mono_ns=1,
        clock_synced=False,
        kind="scan",
        code=f"TUBE-{seq}",
    )


class Events:
    def __init__(self) -> None:
        self.q: queue.Queue[UplinkEvent] = queue.Queue()

    def __call__(self, event: UplinkEvent) -> None:
        self.q.put(event)

    def next(self, kind: type, timeout: float = 20) -> UplinkEvent:
        while True:
            event = self.q.get(timeout=timeout)
            if isinstance(event, kind):
                return event


@pytest.fixture
def server(broker: Broker) -> Iterator[Server]:
    s = Server(broker)
    yield s
    s.close()


def uplink(broker: Broker, port: int | None = None, **kwargs: object) -> MqttUplink:
    counter = iter(range(1, 1000))
    settings: dict[str, object] = {
        "keepalive_s": 5,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "connect_timeout_s": 3,
        "rng": random.Random(3),
        **kwargs,
    }
    return MqttUplink(
        station_id="st-1",
        host=broker.host,
        port=port or broker.port,
        username="st-1",
        password=broker.users["st-1"],
        next_bd_seq=lambda: next(counter),
        clock_wall=lambda: 1.0,
        agent_version="test",
        **settings,  # type: ignore[arg-type]
    )


class Windows(random.Random):
    """Draws the shortest wait of each backoff window and records the window's ceiling."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ceilings: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return a


def flap(proxy: TcpProxy, events: Events) -> None:
    """The broker accepts the connection, then it drops at once."""
    events.next(Connected)
    proxy.cut()
    events.next(Disconnected)
    proxy.restore()


def test_records_go_out_and_acks_and_the_seq_floor_come_back(
    broker: Broker, server: Server
) -> None:
    up, events = uplink(broker), Events()
    up.start(events)
    try:
        events.next(Connected)
        sent = [record(s) for s in range(1, 51)]
        for r in sent:
            up.publish_record(r)
        wait_for(lambda: len(server.records()) == 50, 10, "50 records at the server")
        assert server.records() == sent
        server.send("st-1", StationTopic.ACKS, encode(Ack(record_ids=[sent[0].record_id])))
        assert events.next(Acked) == Acked((sent[0].record_id,))
        server.send("st-1", StationTopic.SYNC, encode(Sync(max_seq=77)))
        assert events.next(Synced) == Synced(77)
        server.send("st-1", StationTopic.SYNC, b"{not json")  # ignored, not fatal
        server.send("st-1", StationTopic.SYNC, encode(Sync(max_seq=78)))
        assert events.next(Synced) == Synced(78)
    finally:
        up.close()
    wait_for(lambda: [s.state for s in server.statuses()] == ["online", "offline"], 10, "statuses")
    assert [s.bd_seq for s in server.statuses()] == [1, 1]


def test_it_reconnects_after_the_broker_comes_back(broker: Broker, server: Server) -> None:
    up, events = uplink(broker), Events()
    up.start(events)
    try:
        events.next(Connected)
        broker.kill()
        events.next(Disconnected)
        attempts = up.attempts
        wait_for(lambda: up.attempts >= attempts + 3, 20, "attempts while the broker is down")
        broker.start()
        events.next(Connected)
        assert up.connected
    finally:
        up.close()


def test_what_paho_held_on_a_dead_connection_is_not_sent_again_by_paho(
    broker: Broker, server: Server
) -> None:
    """Only the station decides what to resend (once, in order), never paho's own queue."""
    with TcpProxy((broker.host, broker.port)) as proxy:
        up, events = uplink(broker, port=proxy.port), Events()
        up.start(events)
        try:
            events.next(Connected)
            proxy.stall()
            stranded = [record(s) for s in range(1, 21)]
            for r in stranded:
                up.publish_record(r)  # held by the stalled network and paho's queue
            proxy.cut()
            events.next(Disconnected)
            proxy.restore()
            events.next(Connected)
            after = record(21)
            up.publish_record(after)
            wait_for(lambda: after in server.records(), 10, "the record sent after reconnecting")
        finally:
            up.close()
    ids = {r.record_id for r in stranded}
    assert not [r for r in server.records() if r.record_id in ids]


def test_a_stalled_network_is_noticed_and_left(broker: Broker, server: Server) -> None:
    with TcpProxy((broker.host, broker.port)) as proxy:
        up, events = uplink(broker, port=proxy.port), Events()
        up.start(events)
        try:
            events.next(Connected)
            proxy.stall()
            events.next(Disconnected, timeout=30)  # keepalive 5 s: no answer to PINGREQ
            proxy.restore()
            events.next(Connected, timeout=30)
        finally:
            up.close()


def test_a_connection_dropped_right_after_it_is_accepted_does_not_reset_the_backoff(
    broker: Broker, server: Server
) -> None:
    windows = Windows()
    with TcpProxy((broker.host, broker.port)) as proxy:
        up, events = (
            uplink(broker, port=proxy.port, reconnect_min_s=0.05, reconnect_max_s=100, rng=windows),
            Events(),
        )
        up.start(events)
        try:
            for _ in range(5):
                flap(proxy, events)
            events.next(Connected)
        finally:
            up.close()
    # Each accepted-then-dropped connection counted as a failure: the window kept doubling
    # (0.1, 0.2, 0.4 s, ...; attempts refused while the proxy was cut count as well).
    ceilings = windows.ceilings
    assert len(ceilings) >= 5
    assert ceilings == sorted(set(ceilings))
    assert ceilings[-1] >= 0.05 * 2**5


def test_the_backoff_starts_over_after_an_acknowledgement_or_a_connection_that_stayed_up(
    broker: Broker, server: Server
) -> None:
    windows = Windows()
    with TcpProxy((broker.host, broker.port)) as proxy:
        up, events = (
            uplink(broker, port=proxy.port, reconnect_min_s=0.05, reconnect_max_s=100, rng=windows),
            Events(),
        )
        up.start(events)
        try:
            for _ in range(3):
                flap(proxy, events)
            events.next(Connected)
            assert windows.ceilings[-1] >= 0.4
            # A record goes out and the server acknowledges it: this connection works. (The
            # record also shows the station's subscriptions are in place: Connected comes with
            # the CONNACK, and the broker handles the station's SUBSCRIBE before its PUBLISH.)
            sent = record(1)
            up.publish_record(sent)
            wait_for(lambda: sent in server.records(), 10, "the record at the server")
            server.send("st-1", StationTopic.ACKS, encode(Ack(record_ids=[sent.record_id])))
            events.next(Acked)
            before = len(windows.ceilings)
            proxy.cut()
            events.next(Disconnected)
            wait_for(lambda: len(windows.ceilings) > before, 10, "the next reconnect")
            assert windows.ceilings[before] == 0.1  # the first window again
            proxy.restore()
            for _ in range(3):
                flap(proxy, events)
            events.next(Connected)
            # No acknowledgement this time, but the connection stays up past the keepalive.
            before = len(windows.ceilings)
            wait_for(lambda: up.failures == 0, 15, "the connection to prove itself")
            proxy.cut()
            events.next(Disconnected)
            wait_for(lambda: len(windows.ceilings) > before, 10, "the next reconnect")
            assert windows.ceilings[before] == 0.1
        finally:
            up.close()
