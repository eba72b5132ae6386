"""Ingest worker processes: started, watched and restarted by the server process.

Each worker is a separate process (``multiprocessing`` spawn: no state inherited from the web
process) with its own database engine and its own MQTT client id, in the shared-subscription
group. A worker that dies is restarted after a short backoff; whatever it held but had not
committed was never acknowledged, so the stations resend it.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from typing import Any

from server.config import ServerConfig
from server.ingest import run_worker
from server.metrics import SharedCounters

log = logging.getLogger(__name__)


class WorkerPool:
    """``workers`` ingest processes for ``config``.

    Args:
        config: the server configuration (sent to each worker as JSON).
        workers: how many processes.
        password: the MQTT password (read once by the parent, passed to the children).
        log_level: the workers' logging threshold.
    """

    def __init__(
        self, config: ServerConfig, workers: int, *, password: str | None, log_level: str
    ) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._config_json = config.model_dump_json()
        self._password = password
        self._log_level = log_level
        self.workers = workers
        self.counters = SharedCounters(self._ctx, workers)
        self._stop = self._ctx.Event()
        self._procs: list[Any] = [None] * workers
        self._closing = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _spawn(self, index: int) -> None:
        proc = self._ctx.Process(
            target=run_worker,
            args=(
                self._config_json,
                index,
                self.counters.array,
                self._stop,
                self._log_level,
                self._password,
            ),
            name=f"swabline-ingest-{index}",
            daemon=False,
        )
        proc.start()
        self._procs[index] = proc
        log.info("ingest worker %d started (pid %d)", index, proc.pid)

    def start(self) -> None:
        for i in range(self.workers):
            self._spawn(i)
        self._supervisor = threading.Thread(target=self._supervise, name="ingest-supervisor")
        self._supervisor.daemon = True
        self._supervisor.start()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.is_alive()]

    def _supervise(self) -> None:
        backoff = [1.0] * self.workers
        while not self._closing.wait(0.5):
            for i, proc in enumerate(self._procs):
                if proc is None or proc.is_alive() or self._closing.is_set():
                    continue
                log.error(
                    "ingest worker %d (pid %d) exited with %s; restarting in %.0f s",
                    i,
                    proc.pid,
                    proc.exitcode,
                    backoff[i],
                )
                if self._closing.wait(backoff[i]):
                    return
                backoff[i] = min(backoff[i] * 2, 30.0)
                self.counters.worker(i).add("restarts")
                self._spawn(i)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask every worker to finish its batch and exit; kill those that do not."""
        self._closing.set()
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for proc in self._procs:
            if proc is None:
                continue
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("ingest worker pid %d did not stop; terminating", proc.pid)
                proc.terminate()
                proc.join(5)
        if self._supervisor is not None:
            self._supervisor.join(2)
