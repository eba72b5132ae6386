"""The ingest workers of ``swabline server`` die with it, even when it is killed with SIGKILL."""

from __future__ import annotations

from pathlib import Path

import pytest

from swabline.broker import Broker
from tests.integration.harness import group_members, start_server, wait_for
from tests.server.test_workers import alive

pytestmark = pytest.mark.integration


def test_ingest_workers_exit_when_the_server_process_is_killed(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url, workers=2)
    try:
        workers = server.worker_pids()
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        # Only the parent, as the OOM killer would: nobody tells the workers.
        server.proc.kill()
        server.proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in workers), 30, "the ingest workers to exit")
        # Nothing else of the server lingers either (multiprocessing's resource tracker).
        wait_for(lambda: not group_members(server.proc.pid), 30, "the whole server to be gone")
    finally:
        server.stop()


def test_killing_the_server_for_a_chaos_test_kills_every_process_at_once(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url, workers=2)
    try:
        workers = server.worker_pids()
        assert len(workers) == 2
        server.kill()
        assert not any(alive(pid) for pid in workers)
        assert not group_members(server.proc.pid)
    finally:
        server.stop()
