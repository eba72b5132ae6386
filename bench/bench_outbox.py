"""Outbox benchmark: what a scan costs on the station, how fast a backlog drains, memory.

Run: ``python -m bench.bench_outbox`` (or ``make bench-outbox``); ``--quick`` for a smoke run
with small sizes; ``--json FILE`` also writes the results as JSON. Needs Mosquitto (for the
drain). Measures, on this machine's disk:

1. append-and-fsync latency (p50, p99, max) of one scan with 0, 1k, 10k and 50k records waiting
   in the outbox (goal: p99 at 50k within 2x of p99 at 0), with TinyDB's own JSONStorage as a
   reference for the small sizes;
2. bytes written per scan (journal lines plus the compactions, amortised);
3. the drain rate of a 10k backlog after a reconnect, from one real agent process through a
   real Mosquitto into a real server process and SQLite, twice: with a station's default pace
   (``mqtt.drain_per_s`` 200, ``max_unacked`` 1000, ``max_inflight`` 100: the pace is the
   limit, by design) and unthrottled (what the path itself can do; goal: >= 2,000 records/s);
4. the resident memory of an agent process with 50k records waiting (goal: < 80 MB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import JSONStorage

from agent.config import MqttConfig
from agent.fakes import FakeClock
from agent.identity import uuid7
from agent.journal import JournalStorage
from agent.outbox import SEGMENT_SIZE, TinyDbOutbox
from protocol import Record
from swabline.broker import SERVER_USER, Broker, free_port

REPO = Path(__file__).resolve().parents[1]
STATION = "st-1"
CODE = "079303001234|025123456|Nguyễn Thị Bình|15082003|Nữ|12 Lê Lợi, P. Bến Nghé, Q.1|20042021"


def record(seq: int) -> Record:
    return Record(
        record_id=uuid7(),
        station_id=STATION,
        seq=seq,
        boot_id="3f2a6c1e-0b7d-4e55-9a55-1c2d3e4f5a6b",
        wall_time=time.time(),
        mono_ns=time.monotonic_ns(),
        clock_synced=True,
        kind="scan",
        code=CODE,
    )


def prefill(path: Path, n: int) -> TinyDbOutbox:
    """An outbox with ``n`` unacknowledged records (written fast: synced once at the end)."""
    outbox = TinyDbOutbox(path, capacity=max(100_000, 2 * n))
    outbox.learn_seq_floor(0)
    storage = outbox.storage
    assert isinstance(storage, JournalStorage)
    with storage.relaxed():
        for start in range(1, n + 1, SEGMENT_SIZE):
            outbox.append_many([record(s) for s in range(start, min(n, start + 249) + 1)])
    storage.compact()
    return outbox


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def bench_append(workdir: Path, backlog: int, samples: int) -> dict[str, Any]:
    outbox = prefill(workdir / f"append-{backlog}", backlog)
    storage = outbox.storage
    assert isinstance(storage, JournalStorage)
    before = storage.stats.bytes_written
    syncs = storage.stats.syncs
    latencies = []
    for seq in range(backlog + 1, backlog + samples + 1):
        r = record(seq)
        t0 = time.perf_counter()
        outbox.append(r)
        latencies.append((time.perf_counter() - t0) * 1000)
    written = storage.stats.bytes_written - before
    synced = storage.stats.syncs - syncs
    # The same without the disk: what the storage itself costs (should not grow with the backlog).
    cpu = []
    with storage.relaxed():
        for seq in range(backlog + samples + 1, backlog + 2 * samples + 1):
            r = record(seq)
            t0 = time.perf_counter()
            outbox.append(r)
            cpu.append((time.perf_counter() - t0) * 1000)
    result = {
        "storage": "JournalStorage",
        "cpu_p50_ms": percentile(cpu, 50),
        "cpu_p99_ms": percentile(cpu, 99),
        "waiting": backlog,
        "samples": samples,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
        "bytes_per_scan": written / samples,
        "syncs_per_scan": synced / samples,
        "compactions": storage.stats.compactions,
    }
    outbox.close()
    shutil.rmtree(workdir / f"append-{backlog}")
    return result


def bench_bytes(workdir: Path, scans: int) -> dict[str, Any]:
    """Bytes written per scan over a long run, compactions included (amortised).

    Offline: scans only pile up. Online: each scan is also acknowledged (in batches of 50, as
    the server does) and purged once acknowledged (retention 0), as on a station that is
    connected all day. Written without fsync to run fast: the bytes are the same.
    """
    out: dict[str, Any] = {"scans": scans}
    for mode in ("offline", "online"):
        clock = FakeClock()
        outbox = TinyDbOutbox(workdir / f"bytes-{mode}", capacity=2 * scans, wall=clock.wall)
        outbox.learn_seq_floor(0)
        storage = outbox.storage
        assert isinstance(storage, JournalStorage)
        before = storage.stats.bytes_written
        batch: list[str] = []
        with storage.relaxed():
            for seq in range(1, scans + 1):
                r = record(seq)
                outbox.append(r)
                if mode == "online":
                    batch.append(r.record_id)
                    if len(batch) == 50:
                        outbox.acknowledge(batch)
                        batch = []
                    if seq % 1000 == 0:
                        clock.advance(10)
                        outbox.purge(acked_before=clock.wall())
        out[f"{mode}_bytes_per_scan"] = (storage.stats.bytes_written - before) / scans
        out[f"{mode}_compactions"] = storage.stats.compactions
        out["record_bytes"] = len(r.model_dump_json().encode())
        outbox.close()
        shutil.rmtree(workdir / f"bytes-{mode}")
    return out


def bench_json_storage(workdir: Path, backlog: int, samples: int) -> dict[str, Any]:
    """TinyDB's own storage, for reference: rewrites the whole file on every insert."""
    path = workdir / f"json-{backlog}.json"
    db = TinyDB(path, storage=JSONStorage)
    table = db.table("records")
    table.insert_multiple(record(s).model_dump(mode="json") for s in range(1, backlog + 1))
    latencies = []
    written = 0
    for seq in range(backlog + 1, backlog + samples + 1):
        doc = record(seq).model_dump(mode="json")
        t0 = time.perf_counter()
        table.insert(doc)  # JSONStorage rewrites the file, flushes and fsyncs it
        latencies.append((time.perf_counter() - t0) * 1000)
        written += path.stat().st_size
    db.close()
    path.unlink()
    return {
        "storage": "JSONStorage (TinyDB default)",
        "waiting": backlog,
        "samples": samples,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
        "bytes_per_scan": written / samples,
        "syncs_per_scan": 1.0,
        "cpu_p50_ms": None,
        "cpu_p99_ms": None,
        "compactions": 0,
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def running(cmd: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=cwd)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait(pred: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def agent_config(d: Path, port: int, password_file: Path, outbox: Path, extra: str = "") -> Path:
    conf = d / "station.toml"
    conf.write_text(
        f'station_id = "{STATION}"\ndevelopment_raw_scans = true\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\npassword_file = "{password_file}"\n'
        f"heartbeat_s = 1\n{extra}\n"
        '[scanner]\ntype = "stdin"\npath = "-"\n\n'
        f'[outbox]\npath = "{outbox}"\n\n[feedback]\ntype = "none"\n'
    )
    return conf


DEFAULTS = MqttConfig()
DRAIN_SETTINGS: dict[str, dict[str, float]] = {
    # A station as configured out of the box: the pace protects the server from a fleet.
    "default pacing": {
        "drain_per_s": DEFAULTS.drain_per_s,
        "max_unacked": DEFAULTS.max_unacked,
        "max_inflight": DEFAULTS.max_inflight,
    },
    # The pace and the windows out of the way: what the path itself can carry.
    "unthrottled": {"drain_per_s": 100_000, "max_unacked": 5000, "max_inflight": 1000},
}


def bench_drain(workdir: Path, backlog: int, name: str) -> dict[str, Any]:
    """A station comes back online with ``backlog`` records: how fast do they reach the DB,
    and leave its outbox? ``name``: which ``DRAIN_SETTINGS`` the station uses."""
    settings = DRAIN_SETTINGS[name]
    d = workdir / "drain"
    d.mkdir()
    prefill(d / "outbox", backlog).close()
    users = {SERVER_USER: secrets.token_urlsafe(12), STATION: secrets.token_urlsafe(12)}
    (d / "server.secret").write_text(users[SERVER_USER])
    (d / "station.secret").write_text(users[STATION])
    db = d / "swabline.db"
    http = free_port()
    with Broker(d / "broker", users=users) as broker:
        (d / "server.toml").write_text(
            f'[database]\nurl = "sqlite:///{db}"\n\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'username = "{SERVER_USER}"\npassword_file = "{d / "server.secret"}"\n\n'
            f'[http]\nhost = "127.0.0.1"\nport = {http}\n'
        )
        exe = [sys.executable, "-m", "swabline", "--log-level", "INFO"]
        server_log = d / "server.log"
        with running([*exe, "server", "--config", str(d / "server.toml")], server_log, d):
            wait(lambda: "ingest connected" in server_log.read_text(), 30, "the server")
            conf = agent_config(
                d,
                broker.port,
                d / "station.secret",
                d / "outbox",
                "".join(f"{k} = {v:g}\n" for k, v in settings.items()),
            )
            agent_log = d / "agent.log"
            agent_cmd = [*exe, "agent", "--config", str(conf)]
            with running(agent_cmd, agent_log, d):
                wait(lambda: "connected to" in agent_log.read_text(), 60, "the agent to connect")
                t0 = time.monotonic()

                def stored() -> int:
                    try:
                        with sqlite3.connect(db, timeout=5) as c:
                            return int(c.execute("SELECT count(*) FROM records").fetchone()[0])
                    except sqlite3.OperationalError:
                        return 0

                wait(lambda: stored() >= backlog, 600, "the backlog in the database")
                t_stored = time.monotonic() - t0
                wait(
                    lambda: (
                        "outbox_depth" in _heartbeat(db) and _heartbeat(db)["outbox_depth"] == 0
                    ),
                    600,
                    "the station to report an empty outbox",
                    0.02,
                )
                t_acked = time.monotonic() - t0
        dups = sum(int(n) for n in re.findall(r"(\d+) duplicate record", server_log.read_text()))
    shutil.rmtree(d)
    return {
        "settings": name,
        "backlog": backlog,
        **settings,
        "stored_s": t_stored,
        "stored_per_s": backlog / t_stored,
        "acked_s": t_acked,
        "acked_per_s": backlog / t_acked,
        "duplicates": dups,
    }


def _heartbeat(db: Path) -> dict[str, Any]:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            row = c.execute(
                "SELECT heartbeat FROM stations WHERE station_id = ?", (STATION,)
            ).fetchone()
    except sqlite3.OperationalError:
        return {}
    return json.loads(row[0]) if row and row[0] else {}


def bench_rss(workdir: Path, backlog: int) -> dict[str, Any]:
    """Resident memory of a real agent process holding ``backlog`` records, offline."""
    d = workdir / "rss"
    d.mkdir()
    prefill(d / "outbox", backlog).close()
    (d / "station.secret").write_text("x")
    conf = agent_config(d, free_port(), d / "station.secret", d / "outbox")  # nobody listens
    log = d / "agent.log"
    with running([sys.executable, "-m", "swabline", "agent", "--config", str(conf)], log, d) as p:
        wait(lambda: f"({backlog} records waiting)" in log.read_text(), 120, "the agent to start")
        time.sleep(3)  # a few reconnection attempts, heartbeat-free (offline)
        status = Path(f"/proc/{p.pid}/status").read_text()
    kib = {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
    shutil.rmtree(d)
    return {"waiting": backlog, "rss_mb": kib["VmRSS"] / 1024, "peak_rss_mb": kib["VmHWM"] / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_outbox", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--workdir", type=Path, help="where to put the outboxes (default: temp)")
    args = parser.parse_args(argv)
    sizes, samples = ([0, 1_000], 200) if args.quick else ([0, 1_000, 10_000, 50_000], 2_000)
    drain = 500 if args.quick else 10_000
    rss = 2_000 if args.quick else 50_000
    workdir = Path(tempfile.mkdtemp(prefix="swabline-bench-", dir=args.workdir))
    results: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(
            ["python -m bench.bench_outbox", *(sys.argv[1:] if argv is None else argv)]
        ),
        "append": [],
        "bytes": None,
        "drain": [],
        "rss": None,
    }
    try:
        for n in sizes:
            results["append"].append(bench_append(workdir, n, samples))
        results["bytes"] = bench_bytes(workdir, 2_000 if args.quick else 20_000)
        for n in sizes[:2] if args.quick else [0, 1_000, 5_000]:
            results["append"].append(bench_json_storage(workdir, n, min(samples, 200)))
        for name in DRAIN_SETTINGS:
            results["drain"].append(bench_drain(workdir, drain, name))
        results["rss"] = bench_rss(workdir, rss)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load_average_end"] = list(os.getloadavg())
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def machine() -> dict[str, Any]:
    """Where and when the run happened: the load average says how busy the machine was."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_start": list(os.getloadavg()),
    }


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    load = ", ".join(f"{x:.2f}" for x in m["load_average_start"])
    if "load_average_end" in m:
        load += "; at the end " + ", ".join(f"{x:.2f}" for x in m["load_average_end"])
    lines = [
        f"{results['command']}: {m['date']}, {m['cpus']} CPUs, load average at start {load}",
        "",
        "Outbox: one scan appended and synced to disk",
        f"{'storage':<30} {'waiting':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'bytes/scan':>11} {'syncs/scan':>10} {'no-sync p50':>11} {'no-sync p99':>11}",
    ]
    for r in results["append"]:
        cpu = (
            f"{r['cpu_p50_ms']:>11.3f} {r['cpu_p99_ms']:>11.3f}"
            if r["cpu_p50_ms"] is not None
            else f"{'':>11} {'':>11}"
        )
        lines.append(
            f"{r['storage']:<30} {r['waiting']:>8} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['max_ms']:>8.2f} {r['bytes_per_scan']:>11.0f} {r['syncs_per_scan']:>10.2f} {cpu}"
        )
    lines.append(
        "(bytes/scan: during these samples only, see the amortised figures below; no-sync: the "
        "same appends without fdatasync, i.e. the storage's own work)"
    )
    journal = [r for r in results["append"] if r["storage"] == "JournalStorage"]
    ratio = journal[-1]["p99_ms"] / journal[0]["p99_ms"]
    lines.append(f"p99 at {journal[-1]['waiting']} waiting / p99 at 0: {ratio:.2f}x (goal: <= 2x)")
    b = results["bytes"]
    lines += [
        "",
        f"Bytes written per scan over {b['scans']} scans, compactions included "
        f"(a record is {b['record_bytes']} bytes of JSON):",
        f"  offline (piling up): {b['offline_bytes_per_scan']:.0f} "
        f"({b['offline_compactions']} compactions)",
        f"  online (each scan acknowledged in batches of 50, then purged): "
        f"{b['online_bytes_per_scan']:.0f} ({b['online_compactions']} compactions)",
    ]
    for d in results["drain"]:
        lines += [
            "",
            f"Drain of a {d['backlog']}-record backlog after reconnecting (one agent, Mosquitto, "
            f"server, SQLite), {d['settings']} (drain_per_s {d['drain_per_s']:g}, max_unacked "
            f"{d['max_unacked']:g}, max_inflight {d['max_inflight']:g}):",
            f"  in the database after {d['stored_s']:.2f} s: {d['stored_per_s']:.0f} records/s"
            + (" (goal: >= 2000)" if d["settings"] == "unthrottled" else ""),
            f"  acknowledged and out of the outbox after {d['acked_s']:.2f} s "
            f"({d['acked_per_s']:.0f} records/s; heartbeat every 1 s); duplicates: "
            f"{d['duplicates']}",
        ]
    m = results["rss"]
    lines += [
        "",
        f"Agent process with {m['waiting']} records waiting: RSS {m['rss_mb']:.1f} MB, "
        f"peak {m['peak_rss_mb']:.1f} MB (goal: < 80 MB)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
