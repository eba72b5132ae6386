"""The broker's security, against a real Mosquitto with the dynamic security plugin."""

from __future__ import annotations

import json
import queue
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

import swabline.broker as broker_module
from server.broker_admin import CONTROL_TOPIC, RESPONSE_TOPIC
from server.ingest import client_id as ingest_client_id
from swabline.broker import (
    DYNSEC_ENV,
    SERVER_USER,
    Broker,
    BrokerError,
    dynsec_plugin,
    free_port,
)
from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration


def t(station: str, kind: str) -> str:
    return f"swabline/v1/stations/{station}/{kind}"


@dataclass
class Conn:
    """A paho client and what happened to it."""

    client: mqtt.Client
    connack: queue.Queue[str] = field(default_factory=queue.Queue)
    disconnects: list[str] = field(default_factory=list)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    subacks: queue.Queue[list[str]] = field(default_factory=queue.Queue)
    pubacks: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, topic: str) -> list[str]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=5)

    def publish(self, topic: str, payload: bytes = b"x") -> str:
        """Publish QoS 1 and return the PUBACK's reason."""
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, 5, "PUBACK")
        return self.pubacks[info.mid]

    def received(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)


@contextmanager
def connect(
    broker: Broker,
    username: str | None,
    password: str | None,
    *,
    tls: bool = False,
    ca_file: str | None = None,
    client_id: str | None = None,
) -> Iterator[Conn]:
    """Connect as ``username`` with ``client_id`` (default: the username, as the agent does;
    "" lets the broker choose one)."""
    if client_id is None:
        client_id = username or ""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    conn = Conn(client)
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)

    def on_connect(_c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        conn.connack.put(str(rc))

    def on_disconnect(_c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        conn.disconnects.append(str(rc))

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with conn.lock:
            conn.messages.append((msg.topic, bytes(msg.payload)))

    def on_subscribe(_c: object, _u: object, _mid: int, rcs: list[ReasonCode], _p: object) -> None:
        conn.subacks.put([str(r) for r in rcs])

    def on_publish(_c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        conn.pubacks[mid] = str(rc)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.reconnect_delay_set(30, 60)  # a refused client must not retry during the test
    client.connect(broker.host, broker.tls_port if tls else broker.port)
    client.loop_start()
    try:
        yield conn
    finally:
        client.disconnect()
        client.loop_stop()


def connack(broker: Broker, username: str | None, password: str | None, **kw: object) -> str:
    with connect(broker, username, password, **kw) as c:  # type: ignore[arg-type]
        return c.connack.get(timeout=5)


def test_anonymous_and_wrong_passwords_are_refused(broker: Broker) -> None:
    assert connack(broker, None, None) == "Not authorized"
    assert connack(broker, None, None, tls=True, ca_file=str(broker.ca_file)) == "Not authorized"
    assert connack(broker, "st-1", "wrong") == "Not authorized"
    assert connack(broker, "st-1", broker.users["st-2"]) == "Not authorized"
    assert connack(broker, "nobody", "x") == "Not authorized"
    assert connack(broker, "st-1", broker.users["st-1"]) == "Success"


def test_a_station_publishes_only_as_itself(broker: Broker) -> None:
    with (
        connect(broker, SERVER_USER, broker.users[SERVER_USER]) as server,
        connect(broker, "st-1", broker.users["st-1"], client_id="st-1") as st1,
    ):
        assert server.connack.get(timeout=5) == st1.connack.get(timeout=5) == "Success"
        assert server.subscribe("swabline/v1/stations/#") == ["Granted QoS 1"]
        for kind in ("records", "status", "heartbeat", "command_results"):
            assert st1.publish(t("st-1", kind), kind.encode()) != "Not authorized"
            assert st1.publish(t("st-2", kind), b"forged") == "Not authorized"
        # A station cannot answer for the server either.
        assert st1.publish(t("st-1", "acks")) == "Not authorized"
        assert st1.publish(t("st-1", "commands")) == "Not authorized"
        assert st1.publish("swabline/v1/other") == "Not authorized"
        wait_for(lambda: len(server.received()) == 4, 5, "the station's own messages")
        st1.publish(t("st-1", "records"), b"last")  # ordered after everything above
        wait_for(lambda: server.received()[-1][1] == b"last", 5, "the last message")
    assert {topic for topic, _ in server.received()} == {
        t("st-1", k) for k in ("records", "status", "heartbeat", "command_results")
    }
    assert b"forged" not in {p for _, p in server.received()}


def test_a_station_cannot_take_another_clients_id_and_knock_it_offline(broker: Broker) -> None:
    """Mosquitto closes a session when another connects with the same client id: each
    station's credentials work only with its own station id as client id."""
    ingest = ingest_client_id(1)
    with (
        connect(broker, "st-2", broker.users["st-2"], client_id="st-2") as st2,
        connect(broker, SERVER_USER, broker.users[SERVER_USER], client_id=ingest) as server,
    ):
        assert st2.connack.get(timeout=5) == server.connack.get(timeout=5) == "Success"
        assert server.subscribe("swabline/v1/stations/+/records") == ["Granted QoS 1"]
        for stolen in ("st-2", ingest, "swabline-ops-host-1", "swabline-admin-1", ""):
            refused = connack(broker, "st-1", broker.users["st-1"], client_id=stolen)
            assert refused == "Not authorized", stolen
        # Neither victim was disconnected: both sessions still carry messages.
        st2.publish(t("st-2", "records"), b"still here")
        wait_for(lambda: (t("st-2", "records"), b"still here") in server.received(), 5, "st-2")
        assert st2.disconnects == [] and server.disconnects == []
    assert connack(broker, "st-1", broker.users["st-1"], client_id="st-1") == "Success"


def test_stations_enrolled_before_the_client_id_binding_are_bound_when_reprovisioned(
    broker: Broker,
) -> None:
    with broker.admin() as admin:  # enrolled the old way: any client id went
        admin.execute(
            {"command": "createRole", "rolename": "station-st-old", "acls": []},
            {"command": "createClient", "username": "st-old", "password": "old-password"},
        )
        assert connack(broker, "st-old", "old-password", client_id="st-1") == "Success"
        admin.put_station("st-old", "new-password")  # re-provisioning
        client = admin.execute({"command": "getClient", "username": "st-old"})[0]
    assert client["data"]["client"]["clientid"] == "st-old"
    assert connack(broker, "st-old", "new-password", client_id="st-1") == "Not authorized"
    assert connack(broker, "st-old", "new-password", client_id="st-old") == "Success"


def test_a_station_reads_only_its_own_acks_and_commands(broker: Broker) -> None:
    with (
        connect(broker, SERVER_USER, broker.users[SERVER_USER]) as server,
        connect(broker, "st-1", broker.users["st-1"], client_id="st-1") as st1,
        connect(broker, "st-2", broker.users["st-2"], client_id="st-2") as st2,
    ):
        for c in (server, st1, st2):
            assert c.connack.get(timeout=5) == "Success"
        assert st1.subscribe(t("st-1", "acks")) == ["Granted QoS 1"]
        assert st1.subscribe(t("st-1", "commands")) == ["Granted QoS 1"]
        for stolen in (
            t("st-2", "acks"),
            t("st-2", "commands"),
            "swabline/v1/stations/+/acks",
            "swabline/v1/stations/+/commands",
            "swabline/v1/stations/st-1/#",
            "swabline/#",
            "#",
            t("st-2", "records"),
            "$share/g/swabline/v1/stations/+/records",
            "$CONTROL/dynamic-security/#",
        ):
            assert st1.subscribe(stolen) == ["Not authorized"], stolen
        assert st2.subscribe(t("st-2", "acks")) == ["Granted QoS 1"]
        assert st2.subscribe(t("st-2", "commands")) == ["Granted QoS 1"]
        server.publish(t("st-2", "acks"), b"ack for 2")
        server.publish(t("st-2", "commands"), b"command for 2")
        server.publish(t("st-1", "acks"), b"ack for 1")
        wait_for(lambda: len(st2.received()) == 2, 5, "st-2's messages")
        wait_for(lambda: len(st1.received()) == 1, 5, "st-1's ack")
    assert st1.received() == [(t("st-1", "acks"), b"ack for 1")]


def test_revoked_credentials_are_refused_at_once_and_the_session_is_closed(
    broker: Broker,
) -> None:
    pid = broker.pid
    with connect(broker, "st-3", broker.users["st-3"], client_id="st-3") as st3:
        assert st3.connack.get(timeout=5) == "Success"
        broker.remove_user("st-3")
        # Mosquitto's dynsec closes the live session of a deleted client.
        wait_for(lambda: st3.disconnects, 5, "the revoked station to be disconnected")
        assert st3.disconnects[0] == "Administrative action"
    assert connack(broker, "st-3", "anything") == "Not authorized"
    assert broker.pid == pid  # no restart


def test_a_new_password_replaces_the_old_one_at_once(broker: Broker) -> None:
    old = broker.users["st-4"]
    with connect(broker, "st-4", old, client_id="st-4") as st4:
        assert st4.connack.get(timeout=5) == "Success"
        broker.add_user("st-4", "a-new-password")
        wait_for(lambda: st4.disconnects, 5, "the old session to be closed")
    assert connack(broker, "st-4", old) == "Not authorized"
    assert connack(broker, "st-4", "a-new-password") == "Success"


def test_stations_added_while_running_connect_with_their_own_rights(broker: Broker) -> None:
    pid = broker.pid
    broker.add_user("st-new", "pw-new")
    with connect(broker, "st-new", "pw-new", client_id="st-new") as c:
        assert c.connack.get(timeout=5) == "Success"
        assert c.subscribe(t("st-new", "acks")) == ["Granted QoS 1"]
        assert c.subscribe(t("st-1", "acks")) == ["Not authorized"]
        assert c.publish(t("st-1", "records")) == "Not authorized"
    assert broker.pid == pid


def test_only_the_admin_user_can_change_credentials_and_it_sees_no_traffic(
    broker: Broker,
) -> None:
    create = json.dumps(
        {"commands": [{"command": "createClient", "username": "evil", "password": "evil"}]}
    ).encode()
    for user in ("st-1", SERVER_USER):
        with connect(broker, user, broker.users[user]) as c:
            assert c.connack.get(timeout=5) == "Success"
            assert c.subscribe(RESPONSE_TOPIC) == ["Not authorized"]
            assert c.publish(CONTROL_TOPIC, create) == "Not authorized"
    assert connack(broker, "evil", "evil") == "Not authorized"
    with connect(broker, broker.admin_username, broker.admin_password) as admin:
        assert admin.connack.get(timeout=5) == "Success"
        assert admin.subscribe("swabline/#") == ["Not authorized"]
        assert admin.publish(t("st-1", "acks")) == "Not authorized"


def test_stations_connect_over_tls_only_with_the_province_ca(broker: Broker) -> None:
    ca = str(broker.ca_file)
    assert connack(broker, "st-5", broker.users["st-5"], tls=True, ca_file=ca) == "Success"
    # Without our CA (the system's trust store only), the broker's certificate is refused.
    with (
        socket.create_connection((broker.host, broker.tls_port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname=broker.host)
    # With it, the certificate is accepted for the broker's name and address.
    ctx = ssl.create_default_context(cafile=ca)
    for name in ("localhost", "127.0.0.1"):
        with (
            socket.create_connection((broker.host, broker.tls_port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # Plain MQTT on the TLS port gets nowhere.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set("st-5", broker.users["st-5"])
    refused: queue.Queue[str] = queue.Queue()
    client.on_disconnect = lambda *a: refused.put("closed")
    client.connect(broker.host, broker.tls_port)
    client.loop_start()
    try:
        assert refused.get(timeout=10) == "closed"
    finally:
        client.loop_stop()


def test_stations_enrolled_while_running_survive_a_broker_restart(tmp_path: Path) -> None:
    with Broker(tmp_path / "b", users={SERVER_USER: "server-password"}) as b:
        b.add_user("st-late", "late-password")
        b.stop()
        b.start()
        assert connack(b, "st-late", "late-password") == "Success"
        assert connack(b, SERVER_USER, "server-password") == "Success"


def test_the_dynsec_plugin_is_found_or_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    found = dynsec_plugin()
    assert found.endswith("mosquitto_dynamic_security.so") and Path(found).is_file()
    monkeypatch.setenv(DYNSEC_ENV, str(tmp_path / "nope.so"))
    with pytest.raises(BrokerError, match=r"nope\.so does not exist"):
        dynsec_plugin()
    assert dynsec_plugin(found) == found  # an explicit path wins over the environment


def test_a_broker_whose_chosen_port_was_taken_meanwhile_starts_on_another(
    tmp_path: Path,
) -> None:
    b = Broker(tmp_path / "b", users={SERVER_USER: "server-password"})
    taken = b.port
    with socket.socket() as squatter:  # another process got there between choice and start
        squatter.bind((b.host, taken))
        squatter.listen()
        with b:
            assert b.port != taken
            assert connack(b, SERVER_USER, "server-password") == "Success"


def test_a_port_asked_for_and_taken_is_an_error_that_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []

    class Watched(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(broker_module.subprocess, "Popen", Watched)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        b = Broker(tmp_path / "b", users={SERVER_USER: "x"}, port=port)
        with pytest.raises(BrokerError, match="Address already in use"):
            b.start()
    assert b.pid is None
    # The failed Mosquitto was waited for and its stderr pipe closed (no leaked descriptor).
    assert started and all(p.returncode is not None for p in started)
    assert all(p.stderr is None or p.stderr.closed for p in started)


def test_free_ports_stay_out_of_the_range_outgoing_connections_use() -> None:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(50)}
    assert not any(low <= p <= high for p in ports)
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # and each one is free
