"""Helpers every benchmark shares: the machine, percentiles, Mosquitto's raw pass-through,
fresh PostgreSQL databases, running ``swabline simulate`` and keeping its JSON.

Run from the repository root so ``swabline`` resolves to this checkout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from swabline.broker import SERVER_USER, Broker, mosquitto_binary
from swabline.sim.metrics import percentile, percentiles

__all__ = [
    "POSTGRES_ADMIN_URL",
    "RESULTS",
    "fresh_postgres",
    "machine_info",
    "percentile",
    "percentiles",
    "raw_passthrough",
    "run_in_group",
    "run_simulate",
    "sample_payload",
    "stop_group",
    "write_results",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
POSTGRES_ADMIN_URL = os.environ.get(
    "SWABLINE_BENCH_POSTGRES_URL",
    os.environ.get(
        "SWABLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _postgres_version() -> str | None:
    try:
        import psycopg

        url = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return f"PostgreSQL {row[0]}" if row else None
    except Exception:  # any failure: report the client version instead
        return _first_line(["psql", "--version"])


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS and the versions of everything a figure depends on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
        if m:
            os_name = f"{m.group(1)} (kernel {platform.release()})"
    try:
        mosquitto = _first_line([mosquitto_binary(), "-h"])
    except RuntimeError:
        mosquitto = None

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": os_name,
        "python": platform.python_version(),
        "mosquitto": mosquitto,
        "postgresql": _postgres_version(),
        "sqlite": sqlite3.sqlite_version,
        "paho_mqtt": version("paho-mqtt"),
        "sqlalchemy": version("sqlalchemy"),
        "load_average": os.getloadavg(),
    }


def sample_payload() -> bytes:
    """One typical record on the wire: a ``person_added`` with a full citizen-ID person."""
    import random

    from agent.identity import uuid7
    from protocol import Record, encode
    from swabline.sim.staff import Staff, StaffProfile, Step

    staff = Staff(1, random.Random(1), StaffProfile(single_fraction=0.0))
    steps = staff.steps()
    step = next(s for s in steps if isinstance(s, Step) and s.entry.kind == "person_added")
    record = Record(
        record_id=uuid7(),
        station_id="st-00001",
        seq=3,
        boot_id=str(uuid.uuid4()),
        wall_time=time.time(),
        mono_ns=time.monotonic_ns(),
        clock_synced=True,
        kind=step.entry.kind,
        code=step.entry.code,
        data=dict(step.entry.data),
    )
    return encode(record)


BROKER_INFLIGHT = 1000
"""``max_inflight_messages`` in broker/mosquitto.conf: in flight besides the queue."""


def broker_max_queued() -> int:
    """``max_queued_messages`` in broker/mosquitto.conf (Mosquitto's default is 1000)."""
    conf = (Path(__file__).resolve().parent.parent / "broker" / "mosquitto.conf").read_text()
    found = re.search(r"^max_queued_messages\s+(\d+)", conf, re.MULTILINE)
    return int(found.group(1)) if found else 1000


def raw_passthrough(
    *, messages: int = 96_000, publishers: int = 8, timeout_s: float = 300
) -> dict[str, Any]:
    """Mosquitto alone: QoS 1 records from ``publishers`` station users to one shared-subscription
    consumer, with Swabline's broker configuration, ACLs and a typical record payload.

    Uses Mosquitto's own C clients (``mosquitto_pub -l`` pipelines one message per input line;
    ``mosquitto_sub -C`` exits after the last one), so the figure is the broker's, not Python's.
    Returns messages per second from the first publish to the last delivery.
    """
    pub, sub = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    if not pub or not sub:
        raise RuntimeError("mosquitto_pub/mosquitto_sub missing: apt-get install mosquitto-clients")
    payload = sample_payload()
    per_pub = messages // publishers
    total = per_pub * publishers
    queue = broker_max_queued()
    if total + BROKER_INFLIGHT > queue:
        # The publishers outrun the one consumer, and Mosquitto silently drops QoS 1 messages
        # queued beyond this for a client: the consumer would then wait for ever.
        raise ValueError(
            f"{total} messages do not fit in the broker's queue for one consumer "
            f"(max_queued_messages {queue} in broker/mosquitto.conf)"
        )
    work = Path(tempfile.mkdtemp(prefix="swabline-raw-"))
    users = {SERVER_USER: secrets.token_urlsafe(12)}
    stations = [f"st-{i:05d}" for i in range(1, publishers + 1)]
    users.update(dict.fromkeys(stations, secrets.token_urlsafe(12)))
    lines = work / "payloads"
    lines.write_bytes((payload + b"\n") * per_pub)
    try:
        with Broker(work / "broker", users=users) as broker:
            common = ["-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", "-q", "1"]
            consumer = subprocess.Popen(
                [
                    sub,
                    *common,
                    "-u",
                    SERVER_USER,
                    "-P",
                    users[SERVER_USER],
                    "-C",
                    str(total),
                    "-t",
                    "$share/raw/swabline/v1/stations/+/records",
                    "-i",
                    "raw-consumer",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)  # let the subscription settle before the first publish
            t0 = time.monotonic()
            procs = []
            for sid in stations:
                with lines.open("rb") as src:
                    procs.append(
                        subprocess.Popen(
                            [
                                pub,
                                *common,
                                "-u",
                                sid,
                                "-P",
                                users[sid],
                                "-i",
                                sid,
                                "-l",
                                "-t",
                                f"swabline/v1/stations/{sid}/records",
                            ],
                            stdin=src,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                        )
                    )
            try:
                consumer.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                consumer.kill()
                raise RuntimeError("raw pass-through did not finish") from None
            elapsed = time.monotonic() - t0
            for p in procs:
                p.wait(timeout=30)
            if consumer.returncode != 0:
                err = consumer.stderr.read().decode() if consumer.stderr else ""
                raise RuntimeError(f"mosquitto_sub failed: {err}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "messages": total,
        "publishers": publishers,
        "payload_bytes": len(payload),
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(total / elapsed, 1),
        "clients": "mosquitto_pub -l / mosquitto_sub -C (QoS 1, MQTT 5, shared subscription)",
    }


@contextlib.contextmanager
def fresh_postgres(prefix: str = "swabline_bench") -> Iterator[str]:
    """A new empty PostgreSQL database for one run, dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: still there
        return True
    return True


def stop_group(pgid: int, *, grace_s: float = 30.0) -> None:
    """End every process of the process group ``pgid``: SIGTERM, then SIGKILL to whatever is
    still there after ``grace_s``. ``swabline simulate`` stops the broker and the server it
    started on SIGTERM; SIGKILL is for a child that cannot."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def run_in_group(
    argv: list[str], *, timeout_s: float, grace_s: float = 30.0, **popen: Any
) -> tuple[int, str, str]:
    """Run ``argv`` as the leader of a new process group; returns (exit code, stdout, stderr).

    Whatever it starts (``simulate --spawn`` starts Mosquitto and a server, which starts its
    ingest workers) is in the same group, and nothing of the group outlives this call: after
    ``timeout_s``, on Ctrl-C, or if the child left anything behind, the group gets SIGTERM,
    then SIGKILL after ``grace_s``. Raises ``TimeoutError`` after a timeout.
    """
    # Output goes to files, not pipes: a grandchild left holding a pipe would keep a reader
    # waiting for its end long after the child exited.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True, **popen)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_group(proc.pid, grace_s=grace_s)
            proc.wait()
            err.seek(0)
            said = err.read().decode(errors="replace")[-3000:]
            raise TimeoutError(
                f"{shlex.join(argv[:6])} ... did not finish within {timeout_s:.0f} s; stopped "
                f"it and everything it started:\n{said}"
            ) from None
        except BaseException:
            stop_group(proc.pid, grace_s=grace_s)
            proc.wait()
            raise
        if _group_alive(proc.pid):  # the child exited but left something behind
            stop_group(proc.pid, grace_s=grace_s)
        out.seek(0)
        err.seek(0)
        return (
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def run_simulate(args: list[str], *, timeout_s: float) -> dict[str, Any]:
    """Run ``swabline simulate --spawn ARGS`` in a child process group and return its JSON
    summary, with the exact command line (database URLs shortened to their kind) under
    ``command``.

    ``timeout_s`` bounds the whole child (start, backlog fill, connecting, running, draining,
    the database check): make it longer than ``--duration`` plus ``--drain-timeout``. On
    timeout the child, its Mosquitto and its server are stopped (``run_in_group``).
    """
    with tempfile.TemporaryDirectory(prefix="swabline-bench-") as tmp:
        out = Path(tmp) / "summary.json"
        argv = [
            sys.executable,
            "-m",
            "swabline",
            "--log-level",
            "WARNING",
            "simulate",
            "--spawn",
            "--no-progress",
            "--json",
            str(out),
            *args,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        load_before = os.getloadavg()
        t0 = time.monotonic()
        code, _stdout, stderr = run_in_group(argv, timeout_s=timeout_s, cwd=REPO, env=env)
        if not out.exists():
            raise RuntimeError(f"simulate failed ({code}):\n{stderr[-3000:]}")
        summary: dict[str, Any] = json.loads(out.read_text())
        summary["exit_code"] = code
        summary["wall_s"] = round(time.monotonic() - t0, 1)
        summary["load_average_before"] = load_before
    shown = ["swabline", "simulate", "--spawn", *args]
    for i, a in enumerate(shown):
        if a.startswith("postgresql"):
            shown[i] = "postgresql://.../<fresh database>"
    summary["command"] = shlex.join(shown)
    return summary


def write_results(
    name: str, payload: dict[str, Any], *, machine: dict[str, Any] | None = None
) -> Path:
    """Write ``bench/results/NAME.json`` with the date (now) and ``machine`` added: pass
    ``machine_info()`` taken when the benchmark started, so that its load average is the one
    the runs started with (default: taken now)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine or machine_info(),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
