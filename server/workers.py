"""Ingest worker processes: started, watched and restarted by the server process.

Each worker is a separate process (``multiprocessing`` spawn: no state inherited from the web
process) with its own database engine and its own MQTT client id, in the shared-subscription
group. A worker that dies is restarted after a short backoff; whatever it held but had not
committed was never acknowledged, so the stations resend it.

A worker never outlives the server process: if the parent dies without stopping it (``kill -9``,
the OOM killer), the worker gets SIGTERM from the kernel (``prctl(PR_SET_PDEATHSIG)``), finishes
its batch and exits; a watchdog thread that notices the parent's pid change does the same where
that is not available, and ends the process outright if the batch does not finish in
``PARENT_GONE_GRACE_S``. An orphaned worker would otherwise go on consuming and acknowledging
with no supervisor, no metrics and no way to stop it but by hand.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

from server.config import ServerConfig
from server.ingest import run_worker
from server.metrics import SharedCounters

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
"""From ``<linux/prctl.h>``."""
PARENT_POLL_S = 1.0
"""How often the watchdog looks at the parent's pid."""
PARENT_GONE_GRACE_S = 10.0
"""Time a worker whose parent died has to finish its batch before it is ended outright."""


def parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False if unavailable.

    The kernel sends it when the *thread* that started this process exits: the pool starts
    workers from the thread that calls ``start`` and from its supervisor thread, both of which
    live as long as the pool (``prctl(2)``).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    log.error("the server process (pid %d) is gone: this ingest worker stops", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)  # ``run_worker`` finishes its batch and returns
    time.sleep(PARENT_GONE_GRACE_S)
    log.error("the batch did not finish within %.0f s of the server's death", PARENT_GONE_GRACE_S)
    os._exit(1)


def exit_with_parent(parent_pid: int) -> None:
    """Make this process stop when ``parent_pid`` (its parent) dies (see the module docstring)."""
    parent_death_signal(signal.SIGTERM)
    threading.Thread(
        target=watch_parent, args=(parent_pid,), name="parent-watch", daemon=True
    ).start()


def worker_main(parent_pid: int, *args: Any) -> None:
    """The worker process's entry point: ``run_worker(*args)``, tied to the parent's life."""
    exit_with_parent(parent_pid)  # also covers a parent that died before this line
    run_worker(*args)


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
            target=worker_main,
            args=(
                os.getpid(),
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
