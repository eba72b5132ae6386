"""`swabline demo` as a person runs it: three stations' records reach the database, the printed
dashboard answers, Ctrl-C (SIGINT) stops every process it started, and a second run on the same
folder works as the first."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from swabline.demo import choose_port
from tests.integration.harness import _env, group_members, kill_group, wait_for

pytestmark = pytest.mark.integration

STATIONS = {"demo-1", "demo-2", "demo-3"}


class Demo:
    """``swabline demo`` in a session of its own, its output collected by a thread."""

    def __init__(self, workdir: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swabline",
                "demo",
                "--workdir",
                str(workdir),
                "--http-port",
                "0",
                "--mqtt-port",
                "0",
                "--scans-per-minute",
                "600",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def dashboard(self) -> str:
        def printed() -> str | None:
            assert self.proc.poll() is None, self.output()
            found = re.search(r"^Dashboard: (http://\S+)", self.output(), re.M)
            return found.group(1) if found else None

        url: str = wait_for(printed, 180, "the dashboard URL")
        return url

    def close(self) -> None:
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def interrupt(self) -> int:
        """Ctrl-C as the demo alone receives it; returns its exit status."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def records_per_station(db: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            rows = c.execute("SELECT station_id, count(*) FROM records GROUP BY station_id")
            return {sid: n for sid, n in rows}
    except sqlite3.OperationalError:  # not created yet, or locked by a writer
        return {}


def run_demo_once(workdir: Path, before: dict[str, int]) -> dict[str, int]:
    """Start the demo, wait for new records from every station, Ctrl-C it; what it stored."""
    demo = Demo(workdir)
    try:
        url = demo.dashboard()
        try:
            with urllib.request.urlopen(url, timeout=10) as page:
                assert page.status == 200
        except urllib.error.HTTPError as exc:  # the login page is an answer too
            assert exc.code in (401, 403), exc
        assert str(workdir / "manual-1.env") in demo.output()

        def grown() -> dict[str, int] | None:
            assert demo.proc.poll() is None, demo.output()
            now = records_per_station(workdir / "swabline.db")
            return now if all(now.get(s, 0) > before.get(s, 0) for s in STATIONS) else None

        stored: dict[str, int] = wait_for(grown, 180, "records from all three stations", 0.5)
        started = descendants(demo.proc.pid)
        assert len(started) >= 5, started  # mosquitto, the server, three agents
        assert demo.interrupt() == 0, demo.output()
        left = [pid for pid in started if alive(pid)]
        assert left == [], f"still running after Ctrl-C: {left}"
        assert group_members(demo.proc.pid) == []
        assert "swabline demo: stopped" in demo.output()
        return stored
    finally:
        kill_group(demo.proc.pid)
        demo.proc.wait()
        demo.close()


def test_the_demo_runs_stops_on_ctrl_c_and_runs_again_on_the_same_folder(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    first = run_demo_once(workdir, {})
    secrets_before = {p: p.read_text() for p in workdir.rglob("*.secret")}
    # Second run: same passwords, so the broker still lets the server and stations in.
    second = run_demo_once(workdir, first)
    assert all(second[s] > first[s] for s in STATIONS)
    assert {p: p.read_text() for p in workdir.rglob("*.secret")} == secrets_before
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _is_ours(p, workdir)]


def _is_ours(cmdline: Path, workdir: Path) -> bool:
    """A process whose command line names the demo's folder (an agent, the server, mosquitto)."""
    try:
        return (
            str(workdir).encode() in cmdline.read_bytes()
            and int(cmdline.parent.name) != os.getpid()
        )
    except OSError:
        return False


def test_a_taken_default_port_gives_way_to_a_free_one_and_an_asked_port_is_kept() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        chosen = choose_port(None, taken)
        assert chosen != taken
        with socket.socket() as s:
            s.bind(("127.0.0.1", chosen))  # free indeed
        assert choose_port(0, taken) != taken  # 0: any free port
        assert choose_port(taken, 8080) == taken  # asked for: kept (Mosquitto says if busy)
