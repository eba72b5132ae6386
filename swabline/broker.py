"""Runs Mosquitto as a child process with the configuration in ``broker/``.

Used by ``swabline demo``, the test fixtures and the benchmarks: never a system-wide service
(production runs ``systemd/swabline-mosquitto.service`` with a file made by ``render_config``).

Authentication and ACLs come from Mosquitto's dynamic security plugin, exactly as in
production: users are added and revoked on the running broker, without a restart.
"""

from __future__ import annotations

import glob
import importlib.resources
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from server.broker_admin import (
    DEFAULT_ADMIN_USER,
    DEFAULT_SERVER_USER,
    SERVER_ROLE,
    DynsecBrokerAdmin,
    bind_station_client_ids,
    hashed_password,
    initial_config,
    station_acls,
    station_client,
    station_role,
)
from swabline.tls import CertPair, issue_server_cert, make_ca

SHARED_CONF = "data/mosquitto.conf"
"""The settings every Swabline broker shares, shipped in the package (``broker/mosquitto.conf``
in the source tree links to it)."""
SERVER_USER = DEFAULT_SERVER_USER
ADMIN_USER = DEFAULT_ADMIN_USER
DYNSEC_PLUGIN_NAME = "mosquitto_dynamic_security.so"
DYNSEC_ENV = "SWABLINE_MOSQUITTO_DYNSEC"
# Debian and Raspberry Pi OS put the plugin under the multiarch directory (x86_64-linux-gnu,
# aarch64-linux-gnu, arm-linux-gnueabihf); source builds under /usr/local/lib.
DYNSEC_GLOBS = (
    "/usr/lib/*-linux-gnu*/" + DYNSEC_PLUGIN_NAME,
    "/usr/lib/" + DYNSEC_PLUGIN_NAME,
    "/usr/lib64/" + DYNSEC_PLUGIN_NAME,
    "/usr/local/lib/" + DYNSEC_PLUGIN_NAME,
    "/usr/local/lib/*/" + DYNSEC_PLUGIN_NAME,
)


class BrokerError(RuntimeError):
    """Mosquitto or its dynamic security plugin is missing, or the broker did not start."""


class _PortTakenError(BrokerError):
    """Another process took a listener's port between its choice and Mosquitto's start."""


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None,
    )
    if not found:
        raise BrokerError(
            "the mosquitto binary is missing: install it with 'sudo apt-get install mosquitto'"
        )
    return found


def dynsec_plugin(explicit: str | Path | None = None) -> str:
    """Path of Mosquitto's dynamic security plugin.

    ``explicit`` if given, else ``$SWABLINE_MOSQUITTO_DYNSEC``, else the first of the usual
    install locations that exists.
    """
    wanted = explicit or os.environ.get(DYNSEC_ENV)
    if wanted:
        if not os.path.isfile(wanted):
            raise BrokerError(f"the dynamic security plugin {wanted} does not exist")
        return str(wanted)
    for pattern in DYNSEC_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    raise BrokerError(
        f"{DYNSEC_PLUGIN_NAME} not found (Mosquitto 2.0+ ships it): set {DYNSEC_ENV} to its path"
    )


def _ephemeral_ports() -> range:
    """The kernel's range for the local end of outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, for a server about to be started on ``host``.

    Chosen outside the kernel's ephemeral range: between this call and the server's bind, any
    outgoing connection on the machine (hundreds of simulated stations, say) takes its local
    port from that range, and could otherwise take this one first.
    """
    ephemeral = _ephemeral_ports()
    below = range(10000, ephemeral.start)
    pool = below if len(below) >= 1000 else range(ephemeral.stop, 65536)
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.choice(pool)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # everything tried is taken: let the kernel choose
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Listener:
    """One Mosquitto listener; with ``tls`` set it speaks only TLS (1.2 or newer)."""

    port: int
    host: str
    tls: CertPair | None = None


def render_config(
    *,
    listeners: list[Listener],
    plugin: str,
    dynsec_file: Path,
    persistence_dir: Path,
    log_lines: str,
    run_as: str | None = None,
) -> str:
    """The whole Mosquitto configuration: listeners, plugin, then the shared settings
    (``broker/mosquitto.conf``)."""
    out = []
    for listener in listeners:
        out.append(f"listener {listener.port} {listener.host}")
        if listener.tls is not None:
            out += [
                f"certfile {listener.tls.cert}",
                f"keyfile {listener.tls.key}",
                "tls_version tlsv1.2",
            ]
    if run_as:
        out.append(f"user {run_as}")
    out += [
        f"plugin {plugin}",
        f"plugin_opt_config_file {dynsec_file}",
        "persistence true",
        f"persistence_location {persistence_dir}/",
        log_lines.rstrip("\n"),
    ]
    shared = importlib.resources.files("swabline").joinpath(SHARED_CONF).read_text()
    return "\n".join(out) + "\n" + shared


class Broker:
    """A Mosquitto child process on loopback ports, with Swabline's dynamic security setup.

    Two listeners, as in production: ``port`` is plain MQTT (the server's loopback listener),
    ``tls_port`` speaks TLS with a certificate for 127.0.0.1 and ``localhost`` signed by a test
    CA (``ca_file``). Users ``swabline-server`` (every station topic) and ``swabline-admin`` (the
    dynsec control topic only, password ``admin_password``) always exist; every other user is a
    station bound to its own topics.

    Args:
        workdir: where the run-time config, dynsec file, certificates and log are written.
        users: username -> password of the server and the stations allowed in at start.
        port: the plain port (default: a free one).
        tls_port: the TLS port (default: a free one).
        plugin: the dynamic security plugin (default: found by ``dynsec_plugin``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str],
        port: int | None = None,
        host: str = "127.0.0.1",
        tls_port: int | None = None,
        plugin: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.tls_port = tls_port or free_port(host)
        self.users = dict(users)
        self.users.setdefault(SERVER_USER, secrets.token_urlsafe(16))
        self.admin_username = ADMIN_USER
        self.admin_password = secrets.token_urlsafe(24)
        self.log_path = workdir / "mosquitto.log"
        self.dynsec_path = workdir / "dynamic-security.json"
        self.ca_file = workdir / "tls" / "ca.crt"
        self._plugin = plugin
        self._ports_chosen = port is None and tls_port is None
        self._proc: subprocess.Popen[bytes] | None = None

    def write_files(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls_dir = self.workdir / "tls"
        if not (tls_dir / "broker.crt").exists():
            ca = make_ca(tls_dir)
            issue_server_cert(ca, tls_dir, names=["localhost", "127.0.0.1", self.host])
        server_cert = CertPair(tls_dir / "broker.crt", tls_dir / "broker.key")
        self._write_dynsec()
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            render_config(
                listeners=[
                    Listener(self.port, self.host),
                    Listener(self.tls_port, self.host, server_cert),
                ],
                plugin=dynsec_plugin(self._plugin),
                dynsec_file=self.dynsec_path,
                persistence_dir=self.workdir,
                log_lines=f"log_dest file {self.log_path}\n"
                "log_type error\nlog_type warning\nlog_type notice\n",
                # Started as root, Mosquitto would switch to user 'mosquitto' and lose our files.
                run_as=pwd.getpwuid(os.geteuid()).pw_name,
            )
        )
        return conf

    def _write_dynsec(self) -> None:
        """The plugin's file: made from ``users`` at first start; afterwards the plugin owns it
        (it saves every change), so stations enrolled meanwhile survive a restart. The users
        given here get the passwords given here, on every start: a file kept from an earlier
        run never holds passwords its users no longer know."""
        stations = {u: p for u, p in self.users.items() if u != SERVER_USER}
        if self.dynsec_path.exists():
            data: dict[str, Any] = json.loads(self.dynsec_path.read_text())
            for client in data["clients"]:
                if client["username"] == ADMIN_USER:
                    client.update(hashed_password(self.admin_password))
            for username, password in self.users.items():
                _set_user(data, username, password)
            bind_station_client_ids(data)
        else:
            data = initial_config(
                server_password=self.users[SERVER_USER],
                admin_password=self.admin_password,
                stations=stations,
            )
        self.dynsec_path.write_text(json.dumps(data, indent=1))
        self.dynsec_path.chmod(0o600)

    def start(self) -> Broker:
        """Start Mosquitto and wait until both listeners accept connections.

        When the ports were chosen here and one was taken in the meantime, start again on other
        free ports (three tries).
        """
        for attempt in range(3):
            try:
                return self._start_once()
            except _PortTakenError:
                if not self._ports_chosen or attempt == 2:
                    raise
                self.port, self.tls_port = free_port(self.host), free_port(self.host)
        raise AssertionError("unreachable")

    def _start_once(self) -> Broker:
        conf = self.write_files()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        waiting = [self.port, self.tls_port]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                assert proc.stderr is not None
                with proc.stderr:
                    err = proc.stderr.read().decode(errors="replace")
                said = (err + self.read_log()[log_start:]).strip()
                if "Address already in use" in said:
                    raise _PortTakenError(f"mosquitto could not listen: {said}")
                raise BrokerError(f"mosquitto exited at start: {said}")
            try:
                with socket.create_connection((self.host, waiting[0]), timeout=0.2):
                    waiting.pop(0)
                    if not waiting:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port}/{self.tls_port}")

    def admin(self) -> DynsecBrokerAdmin:
        """A broker-admin connection over the plain loopback listener (use as a context manager)."""
        return DynsecBrokerAdmin(
            host=self.host,
            port=self.port,
            username=self.admin_username,
            password=self.admin_password,
        )

    def add_user(self, username: str, password: str) -> None:
        """Add a station, or change a user's password, on the running broker (no restart).

        A changed password disconnects the sessions that used the old one.
        """
        self.users[username] = password
        if self._proc is None:
            self._edit_file(username, password)
            return
        with self.admin() as admin:
            if username == SERVER_USER:
                admin.execute(
                    {"command": "setClientPassword", "username": username, "password": password}
                )
            else:
                admin.put_station(username, password)

    def remove_user(self, username: str) -> None:
        """Revoke a station at once: later connections are refused, its session is closed."""
        self.users.pop(username, None)
        if self._proc is None:
            self._edit_file(username, None)
            return
        with self.admin() as admin:
            admin.remove_station(username)

    def _edit_file(self, username: str, password: str | None) -> None:
        if not self.dynsec_path.exists():
            return  # written from self.users at start
        data = json.loads(self.dynsec_path.read_text())
        _set_user(data, username, password)
        self.dynsec_path.write_text(json.dumps(data, indent=1))

    def reload(self) -> None:
        """Ask Mosquitto to reread its configuration (SIGHUP); credentials need no reload."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _set_user(data: dict[str, Any], username: str, password: str | None) -> None:
    """Put ``username`` in a dynsec file's ``data`` with ``password``, or remove it (None)."""
    data["clients"] = [c for c in data["clients"] if c["username"] != username]
    if username != SERVER_USER:
        role = station_role(username)
        data["roles"] = [r for r in data["roles"] if r["rolename"] != role]
    if password is not None and username == SERVER_USER:
        data["clients"].append(
            {
                "username": username,
                **hashed_password(password),
                "roles": [{"rolename": SERVER_ROLE}],
            }
        )
    elif password is not None:
        data["clients"].append(station_client(username, password))
        data["roles"].append({"rolename": station_role(username), "acls": station_acls(username)})
