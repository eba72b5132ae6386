"""An ingest worker never outlives the server process that started it.

Each mechanism on its own, in real processes: a parent starts a child that arms one of them,
the test kills the parent with SIGKILL (no chance to stop its children), and the child must go.
The whole server is tested in ``tests/integration/test_worker_lifecycle.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.harness import wait_for

REPO = Path(__file__).resolve().parents[2]

ARM = {
    "kernel": "from server.workers import parent_death_signal\n"
    "assert parent_death_signal(signal.SIGTERM)\n",
    "watchdog": "from server.workers import watch_parent\n"
    "threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()\n",
}

PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("mechanism", ["kernel", "watchdog"])
def test_a_child_armed_against_orphaning_ends_when_its_parent_is_killed(mechanism: str) -> None:
    child_code = (
        "import os, signal, threading, time\n"
        + ARM[mechanism]
        + "print('armed', flush=True)\ntime.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, child_code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "armed"  # the child's own output
        assert alive(child)
        parent.kill()
        parent.wait()
        wait_for(lambda: not alive(child), 30, f"the orphaned child ({mechanism}) to end")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()
        parent.wait()


def test_an_unarmed_child_would_have_lived_on() -> None:
    """The control: without either mechanism the orphan keeps running (what happened to the
    ingest workers of a killed server before)."""
    child_code = "import time\nprint('armed', flush=True)\ntime.sleep(600)\n"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, child_code],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "armed"
        parent.kill()
        parent.wait()
        # Longer than the watchdog's poll and the kernel's signal would need.
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not alive(child), 3, "the child")
        assert alive(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()
        parent.wait()
