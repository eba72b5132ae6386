"""Start real server and agent processes against a test broker."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swabline.broker import SERVER_USER, Broker, free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ServerProc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    token: str = ""
    """API token of the bootstrap provincial admin (every /api/* call needs one)."""

    def get(self, path: str) -> Any:
        return json.loads(self.get_text(path))

    def get_text(self, path: str) -> str:
        req = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            body: bytes = r.read()
            return body.decode()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bootstrap_admin(workdir: Path, conf: Path) -> str:
    """Create the first provincial admin with ``swabline admin bootstrap``; its API token."""
    token_file = workdir / "admin.token"
    if not token_file.exists():
        password = workdir / "admin.password"
        password.write_text(secrets.token_urlsafe(16))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "swabline",
                "admin",
                "--config",
                str(conf),
                "bootstrap",
                "--username",
                "admin",
                "--password-file",
                str(password),
                "--province-code",
                "TEST",
                "--province-name",
                "Test province",
                "--token-file",
                str(token_file),
            ],
            check=True,
            env=_env(),
            capture_output=True,
        )
    return token_file.read_text().strip()


def start_server(
    workdir: Path, broker: Broker, db_url: str, *, extra: str = "", workers: int | None = None
) -> ServerProc:
    """``swabline server`` (with ``workers`` ingest processes, default from the config) after
    bootstrapping an admin whose token the returned ``ServerProc`` uses."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret = workdir / "server.secret"
    secret.write_text(broker.users[SERVER_USER])
    port = free_port()
    conf = workdir / "server.toml"
    conf.write_text(
        f'[database]\nurl = "{db_url}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'username = "{SERVER_USER}"\npassword_file = "{secret}"\n\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n' + extra
    )
    token = bootstrap_admin(workdir, conf)
    log = workdir / "server.log"
    cmd = [sys.executable, "-m", "swabline", "server", "--config", str(conf)]
    if workers is not None:
        cmd += ["--ingest-workers", str(workers)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=workdir,
        )
    server = ServerProc(proc, f"http://127.0.0.1:{port}", log, token)
    expected = 1 if workers is None else workers

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            server.get("/healthz")
            return log.read_text().count("ingest connected") >= expected
        except OSError:
            return False

    wait_for(up, 30, "server to start")
    return server


@dataclass
class AgentProc:
    station_id: str
    proc: subprocess.Popen[bytes]
    outbox: Path
    log: Path
    sent: list[str] = field(default_factory=list)

    def feed(self, codes: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(c + "\n" for c in codes).encode())
        self.proc.stdin.flush()
        self.sent.extend(codes)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return self.proc.returncode


def start_agent(
    workdir: Path, broker: Broker, station_id: str, *, extra_mqtt: str = "", port: int | None = None
) -> AgentProc:
    d = workdir / station_id
    d.mkdir(parents=True, exist_ok=True)
    secret = d / "mqtt.secret"
    secret.write_text(broker.users[station_id])
    outbox = d / "outbox.json"
    conf = d / "station.toml"
    conf.write_text(
        f'station_id = "{station_id}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {port or broker.port}\n'
        f'password_file = "{secret}"\nheartbeat_s = 1\nresend_after_s = 5\n{extra_mqtt}\n'
        '[scanner]\ntype = "stdin"\n\n'
        f'[outbox]\npath = "{outbox}"\n\n[feedback]\ntype = "log"\n'
    )
    log = d / "agent.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "swabline", "agent", "--config", str(conf)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    return AgentProc(station_id, proc, outbox, log)


class StationPublisher:
    """A bare station on MQTT (paho, as the agent uses it): publishes records, collects acks.

    For tests that need many records fast, or to resend on purpose; ``resend_unacked`` plays the
    agent's resend timer.
    """

    def __init__(self, broker: Broker, station_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from protocol import Ack, decode
        from protocol.topics import StationTopic, topic

        self.station_id = station_id
        self.sent: dict[str, Any] = {}
        self.acked: set[str] = set()
        self.ack_messages = 0
        self._topic = topic(station_id, StationTopic.RECORDS)
        self._status_topic = topic(station_id, StationTopic.STATUS)
        self._lock = threading.Lock()
        self._connected = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=station_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(station_id, broker.users[station_id])
        client.max_inflight_messages_set(100)

        def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            c.subscribe(topic(station_id, StationTopic.ACKS), qos=1)
            self._connected.set()

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            ids = decode(Ack, bytes(msg.payload)).record_ids
            with self._lock:
                self.ack_messages += 1
                self.acked.update(ids)

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        self._client = client
        wait_for(self._connected.is_set, 10, f"{station_id} to connect")

    def publish(self, records: list[Any]) -> None:
        from protocol import encode

        for r in records:
            self.sent[r.record_id] = r
            self._client.publish(self._topic, encode(r), qos=1)

    def publish_status(self, payload: bytes) -> None:
        self._client.publish(self._status_topic, payload, qos=1, retain=True).wait_for_publish(5)

    def unacked(self) -> list[Any]:
        with self._lock:
            return [r for rid, r in self.sent.items() if rid not in self.acked]

    def resend_unacked(self) -> int:
        pending = self.unacked()
        self.publish(pending)
        return len(pending)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
