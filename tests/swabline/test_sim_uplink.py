"""The simulated stations' uplink backs off as a real station does (against a real Mosquitto)."""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.ports import Acked, Connected, UplinkEvent
from protocol import Ack, Record, encode
from protocol.topics import StationTopic, topic
from swabline.broker import SERVER_USER, Broker
from swabline.sim.uplink import AsyncioMqttUplink, ConnectGate
from tests.agent.test_mqtt_uplink import Windows, record

pytestmark = pytest.mark.integration


class Server:
    """Acknowledges every record a station publishes, as the ingest would."""

    def __init__(self, broker: Broker) -> None:
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-server", protocol=mqtt.MQTTv5)
        c.username_pw_set(SERVER_USER, broker.users[SERVER_USER])
        c.on_connect = lambda cl, *_: cl.subscribe("swabline/v1/stations/+/records", qos=1)
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.on_message = self._ack
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert self.subscribed.wait(10)
        self.client = c

    def _ack(self, c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        rid = Record.model_validate_json(msg.payload).record_id
        sid = msg.topic.split("/")[3]
        c.publish(topic(sid, StationTopic.ACKS), encode(Ack(record_ids=[rid])), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def next_event(events: asyncio.Queue[UplinkEvent], kind: type) -> UplinkEvent:
    async with asyncio.timeout(20):
        while True:
            event = await events.get()
            if isinstance(event, kind):
                return event


async def wait_until(check: object, what: str) -> None:
    async with asyncio.timeout(20):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def test_a_simulated_station_resets_its_backoff_only_after_a_connection_proves_itself(
    broker: Broker,
) -> None:
    windows = Windows()
    server = Server(broker)

    async def main() -> None:
        events: asyncio.Queue[UplinkEvent] = asyncio.Queue()
        counter = iter(range(1, 1000))
        up = AsyncioMqttUplink(
            station_id="st-1",
            host=broker.host,
            port=broker.port,
            username="st-1",
            password=broker.users["st-1"],
            next_bd_seq=lambda: next(counter),
            clock_wall=lambda: 1.0,
            agent_version="test",
            gate=ConnectGate(4),
            rng=windows,
            keepalive_s=60,
            reconnect_min_s=0.02,
            reconnect_max_s=100,
        )
        up.start(events.put_nowait)
        try:
            # Four connections dropped right after their CONNACK: each counts as a failure.
            for _ in range(4):
                await next_event(events, Connected)
                up.drop()
            await next_event(events, Connected)
            assert windows.ceilings == [0.04, 0.08, 0.16, 0.32]
            # This one carries a record and its acknowledgement: it works, so after the next
            # drop the station starts again from the first window.
            up.publish_record(record(1))
            await next_event(events, Acked)
            up.drop()
            await wait_until(lambda: len(windows.ceilings) == 5, "the next reconnect")
            assert windows.ceilings[-1] == 0.04
        finally:
            up.close()

    try:
        asyncio.run(main())
    finally:
        server.close()
