"""``swabline simulate --spawn``: a Mosquitto and a Swabline server on loopback to aim at.

The broker runs with ``broker/``'s configuration and ACLs and one user per simulated station,
exactly as in production; the server is ``swabline server`` as a child process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from swabline.broker import SERVER_USER, Broker

REPO = Path(__file__).resolve().parents[2]


def _server_has_worker_processes(source: Path) -> bool:
    """Whether the server in ``source`` runs ingest worker processes (``[ingest] workers``)."""
    probe = "from server.config import IngestConfig; print('workers' in IngestConfig.model_fields)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=_env(source),
        cwd=source,  # python -c puts the working folder first on sys.path
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.stdout.strip() == "True"


class SpawnError(RuntimeError):
    """The broker or the server did not start."""


def _env(source: Path = REPO) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Spawned:
    """Broker + server processes for a simulation, stopped on exit.

    Args:
        workdir: broker files, server config and logs go here.
        station_ids: every simulated station gets a broker user of that name.
        database_url: the server's store (default: SQLite in ``workdir``).
        server_source: run ``swabline server`` from this checkout (default: this one), e.g. to
            compare two versions of the server under the same load.
        ingest_workers: how many ingest consumers share the records (MQTT 5 shared
            subscription). Where the server has ingest worker processes (``[ingest] workers``),
            one server runs that many; otherwise one ``swabline server`` process each.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        station_ids: list[str],
        database_url: str | None = None,
        ingest_workers: int = 1,
        batch_max_rows: int | None = None,
        server_source: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.database_url = database_url or f"sqlite:///{workdir / 'swabline.db'}"
        self.ingest_workers = ingest_workers
        self.batch_max_rows = batch_max_rows
        self.server_source = server_source or REPO
        # One password for every simulated station: each still authenticates as its own user
        # (the ACLs bind topics to it); hashing 10,000 distinct secrets would buy nothing.
        self.station_password = secrets.token_urlsafe(16)
        self.server_password = secrets.token_urlsafe(16)
        users = {SERVER_USER: self.server_password}
        users.update(dict.fromkeys(station_ids, self.station_password))
        self.broker = Broker(workdir / "broker", users=users)
        self.servers: list[subprocess.Popen[bytes]] = []
        self.startup_s: dict[str, float] = {}

    def start(self) -> Spawned:
        self.workdir.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        self.broker.start()
        self.startup_s["broker"] = time.monotonic() - t
        secret = self.workdir / "server.secret"
        secret.write_text(self.server_password)
        secret.chmod(0o600)
        t = time.monotonic()
        if _server_has_worker_processes(self.server_source):
            self.servers.append(self._start_server(0, secret, workers=self.ingest_workers))
            self._wait_ready(0, self.servers[0], self.ingest_workers)
        else:
            # One after the other: the first one migrates the database.
            for n in range(self.ingest_workers):
                self.servers.append(self._start_server(n, secret))
                self._wait_ready(n, self.servers[n], 1)
        self.startup_s["server"] = time.monotonic() - t
        return self

    def _start_server(
        self, n: int, secret: Path, *, workers: int | None = None
    ) -> subprocess.Popen[bytes]:
        conf = self.workdir / f"server-{n}.toml"
        ingest = []
        if self.batch_max_rows:
            ingest.append(f"batch_max_rows = {self.batch_max_rows}")
        if workers is not None:
            ingest.append(f"workers = {workers}")
        batch = "[ingest]\n" + "".join(line + "\n" for line in ingest) if ingest else ""
        conf.write_text(
            f'[database]\nurl = "{self.database_url}"\n\n'
            f'[mqtt]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n'
            f'username = "{SERVER_USER}"\npassword_file = "{secret}"\n\n'
            f'[http]\nhost = "127.0.0.1"\nport = 0\n\n{batch}'
        )
        log = (self.workdir / f"server-{n}.log").open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "swabline", "server", "--config", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(self.server_source),
                cwd=self.workdir,
            )
        finally:
            log.close()

    def server_log(self, n: int = 0) -> str:
        try:
            return (self.workdir / f"server-{n}.log").read_text(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, n: int, proc: subprocess.Popen[bytes], consumers: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SpawnError(f"swabline server exited at start:\n{self.server_log(n)}")
            if self.server_log(n).count("ingest connected") >= consumers:
                return
            time.sleep(0.1)
        raise SpawnError(f"swabline server did not connect to the broker:\n{self.server_log(n)}")

    @property
    def pids(self) -> dict[str, list[int]]:
        return {
            "broker": [self.broker.pid] if self.broker.pid else [],
            "server": [p.pid for p in self.servers],
        }

    def stop(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.servers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.servers = []
        self.broker.stop()

    def __enter__(self) -> Spawned:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
