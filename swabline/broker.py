"""Runs Mosquitto as a child process with the configuration in ``broker/``.

Used by ``swabline demo``, the test fixtures and the benchmarks: never a system-wide service.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

BROKER_DIR = Path(__file__).resolve().parent.parent / "broker"
SERVER_USER = "swabline-server"


class BrokerError(RuntimeError):
    """Mosquitto is missing, or did not start."""


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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def password_line(username: str, password: str) -> str:
    """A Mosquitto 2 password-file line (PBKDF2-SHA512, as ``mosquitto_passwd`` writes it)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return (
        f"{username}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    )


class Broker:
    """A Mosquitto child process on a loopback port, with Swabline's ACLs and password file.

    Args:
        workdir: where the run-time config, password file and log are written.
        users: username -> password of every client allowed in.
        port: the port to listen on (default: a free one).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str],
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.users = dict(users)
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def write_files(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pw = self.workdir / "passwords"
        pw.write_text("".join(password_line(u, p) + "\n" for u, p in self.users.items()))
        pw.chmod(0o600)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            # Started as root, Mosquitto would switch to user 'mosquitto' and lose our files.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            f"password_file {pw}\n"
            f"acl_file {BROKER_DIR / 'acl'}\n"
            f"persistence true\n"
            f"persistence_location {self.workdir}/\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            + (BROKER_DIR / "mosquitto.conf").read_text()
        )
        return conf

    def start(self) -> Broker:
        conf = self.write_files()
        self._proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise BrokerError(f"mosquitto exited at start: {err or self.read_log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port}")

    def add_user(self, username: str, password: str) -> None:
        """Add or change a user; Mosquitto reloads its password file on SIGHUP."""
        self.users[username] = password
        self.write_files()
        self.reload()

    def remove_user(self, username: str) -> None:
        self.users.pop(username, None)
        self.write_files()
        self.reload()

    def reload(self) -> None:
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
