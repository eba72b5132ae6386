"""Start real server and agent processes against a test broker."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from swabline.broker import SERVER_USER, Broker, free_port
from tests.conftest import in_ci

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


@contextlib.contextmanager
def small_disk(mountpoint: Path, size_kib: int) -> Iterator[Path]:
    """A real, tiny file system (tmpfs) at ``mountpoint``, for disk-full tests.

    Mounting needs root, or passwordless sudo (as on CI machines). Like the PostgreSQL tests,
    these are skipped on a laptop that has neither, and fail in CI.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    cmd = [*sudo, "mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0777", "tmpfs"]
    try:
        done = subprocess.run([*cmd, str(mountpoint)], capture_output=True, text=True, check=False)
        problem = done.stderr.strip() if done.returncode != 0 else ""
    except OSError as exc:  # no sudo at all
        problem = str(exc)
    if problem:
        message = f"disk-full tests mount a tmpfs: need root or passwordless sudo ({problem})"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mountpoint
    finally:
        subprocess.run([*sudo, "umount", "-l", str(mountpoint)], check=False)


SAVED_LINE = re.compile(r"saved record ([0-9a-f-]{36}) seq (\d+)")
"""What the station logs when it signals SAVED (once the record is synced to disk)."""


def saved_in_log(log: Path) -> dict[str, int]:
    """Record id -> seq of every record signalled as saved, over every run sharing ``log``."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return {rid: int(seq) for rid, seq in SAVED_LINE.findall(text)}


class Feeder:
    """Feeds codes to agents at a steady pace from a thread, surviving agent restarts.

    ``agents()`` is asked for the current agents each time, so a test can restart them. Every
    ``interval_s`` each agent gets ``batch`` codes (a write blocks while the agent's stdin pipe
    is full, so a feeder faster than the agent keeps it busy without piling codes up).
    """

    def __init__(
        self,
        prefix: str,
        interval_s: float,
        agents: Callable[[], list[AgentProc]],
        *,
        batch: int = 1,
    ):
        self.prefix, self.interval_s, self.agents, self.batch = prefix, interval_s, agents, batch
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feeder-{prefix}", daemon=True)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for agent in self.agents():
                codes = [
                    f"{self.prefix}-{agent.station_id}-{self.sent:06d}-{i:02d}"
                    for i in range(self.batch)
                ]
                with contextlib.suppress(OSError, ValueError):  # a killed agent: try the next
                    agent.feed(codes)
            self.sent += 1


_GROUPS: set[int] = set()
"""Process groups of the servers and agents started here and not yet stopped."""


def _spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session (and process group) of its own, so that stopping it can also
    end every process it started (ingest workers, multiprocessing's resource tracker)."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    _GROUPS.add(proc.pid)
    return proc


def kill_group(pgid: int) -> None:
    """SIGKILL every process of the group ``pgid``, then forget it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _GROUPS.discard(pgid)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp, ...
                members.append(int(stat.parent.name))
    return members


def kill_leftovers() -> list[int]:
    """End every group a test started and did not stop; the groups it found."""
    left = sorted(_GROUPS)
    for pgid in left:
        kill_group(pgid)
    return left


def wait_or_kill(
    proc: subprocess.Popen[Any], timeout_s: float, last: signal.Signals = signal.SIGKILL
) -> int | None:
    """``proc``'s exit code if it exits within ``timeout_s``; else it is sent ``last`` (and
    SIGKILL if that does not end it) and ``None`` is returned: it never outlives the test."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(last)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        return None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT (or a crash) writes every thread's stack to stderr
    return env


@dataclass
class ServerProc:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    token: str = ""
    """API token of the bootstrap provincial admin (every /api/* call needs one)."""
    log_start: int = 0

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
        """Signal the server process (it stops its ingest workers), wait for it, then end
        whatever of its process group is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_group(self.proc.pid)

    def kill(self) -> None:
        """``kill -9`` the whole server at once: the web process and every ingest worker (the
        machine lost power, or systemd killed the unit's control group)."""
        kill_group(self.proc.pid)
        self.proc.wait()
        wait_for(lambda: not group_members(self.proc.pid), 30, "every server process to die")

    def worker_pids(self) -> list[int]:
        """Pids of the ingest workers this run started (from its log)."""
        text = self.log.read_bytes()[self.log_start :].decode(errors="replace")
        return [int(p) for p in re.findall(r"ingest worker \d+ started \(pid (\d+)\)", text)]


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
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = _spawn(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=workdir,
        )
    server = ServerProc(proc, f"http://127.0.0.1:{port}", log, token, start)
    expected = 1 if workers is None else workers

    def this_run() -> str:
        with log.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {this_run()}")
        try:
            server.get("/healthz")
            return this_run().count("ingest connected") >= expected
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
    log_start: int = 0
    """Where this run's lines begin in ``log`` (the file is shared by restarts)."""
    sent: list[str] = field(default_factory=list)

    def feed(self, codes: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(c + "\n" for c in codes).encode())
        self.proc.stdin.flush()
        self.sent.extend(codes)

    def saved(self) -> dict[str, int]:
        """Record id -> seq of every record this run signalled as saved."""
        return {rid: int(seq) for rid, seq in SAVED_LINE.findall(self.log_text())}

    def log_text(self) -> str:
        """This run's log lines."""
        with self.log.open("rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the agent accepts scans (a new outbox first learns its seq floor)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited: {self.log_text()}")
            text = self.log_text()
            if "starting (" not in text:
                return False
            return "new outbox" not in text or "scans are accepted" in text

        wait_for(ready, timeout, f"agent {self.station_id} to accept scans")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        kill_group(self.proc.pid)
        return self.proc.returncode


def start_agent(
    workdir: Path,
    broker: Broker,
    station_id: str,
    *,
    extra_mqtt: str = "",
    extra_outbox: str = "",
    port: int | None = None,
    outbox: Path | None = None,
    wait_ready: bool = True,
    env: dict[str, str] | None = None,
    workflow: str | None = None,
) -> AgentProc:
    """Start ``swabline agent`` reading codes from its stdin (``AgentProc.feed``).

    By default waits until the agent accepts scans; ``port`` points it elsewhere than the
    broker (e.g. a ``TcpProxy``), ``outbox`` elsewhere than ``workdir/<station>/outbox``.
    ``workflow``: the body of a ``[workflow]`` section (TOML); without it the agent stores every
    scan as a raw ``scan`` record (``development_raw_scans``).
    """
    d = workdir / station_id
    d.mkdir(parents=True, exist_ok=True)
    secret = d / "mqtt.secret"
    secret.write_text(broker.users[station_id])
    outbox = outbox or d / "outbox"
    conf = d / "station.toml"
    conf.write_text(
        f'station_id = "{station_id}"\n'
        + ("development_raw_scans = true\n" if workflow is None else "")
        + f'\n[mqtt]\nhost = "{broker.host}"\nport = {port or broker.port}\n'
        f'password_file = "{secret}"\nheartbeat_s = 1\nresend_after_s = 5\n'
        "reconnect_min_s = 0.2\nreconnect_max_s = 2\n"
        f"{extra_mqtt}\n"
        '[scanner]\ntype = "stdin"\n\n'
        f'[outbox]\npath = "{outbox}"\n{extra_outbox}\n[feedback]\ntype = "log"\n'
        + (f"\n[workflow]\n{workflow}\n" if workflow is not None else "")
    )
    log = d / "agent.log"
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = _spawn(
            [sys.executable, "-m", "swabline", "agent", "--config", str(conf)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**_env(), **(env or {})},
        )
    agent = AgentProc(station_id, proc, outbox, log, start)
    if wait_ready:
        try:
            agent.wait_ready()
        except AssertionError as exc:
            agent.stop(signal.SIGKILL)
            raise AssertionError(f"{exc}; its log:\n{agent.log_text()}") from None
    return agent


def mqtt_connack(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    ca_file: str | None = None,
    client_id: str | None = None,
) -> str:
    """Connect once and return the broker's CONNACK reason ("Success", "Not authorized", ...).

    The client id is ``username`` unless given: a station's credentials are bound to its own
    station id as client id ("" lets the broker choose one)."""
    import queue
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answers: queue.Queue[str] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=username if client_id is None else client_id,
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(username, password)
    if ca_file:
        client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect = lambda _c, _u, _f, rc, _p: answers.put(str(rc))
    client.reconnect_delay_set(30, 60)
    client.connect(host, port)
    client.loop_start()
    try:
        return answers.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


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
