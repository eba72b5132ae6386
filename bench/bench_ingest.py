"""End-to-end ingest benchmark: simulated stations -> Mosquitto -> ingest workers -> database ->
acknowledgements back to the stations.

    python -m bench.bench_ingest                     # SQLite and PostgreSQL, default sizes
    python -m bench.bench_ingest --db sqlite --records 5000 --quick

What it measures, in one run against one Mosquitto (started from ``broker/``'s configuration):

1. **raw**: the Mosquitto QoS 1 pass-through rate with the same client library (paho), the same
   publishers and the same payloads: the stations publish, one paho subscriber in its own process
   receives through the same shared subscription, in-flight window and MQTT 5 clean session as
   an ingest worker, and does nothing with each message.
2. **ingest, 1 worker**: records/s from the first publish until the last acknowledgement is
   back at its station (committed rows, acks received), and its ratio to raw (goal >= 0.8).
3. **latency**: scan-to-acknowledgement at half of (2)'s rate: p50 and p99 (goal p99 < 100 ms).
4. **ingest, 2 workers**: the same as (2) with two worker processes.

Every phase checks that every record is in the database exactly once and was acknowledged
(duplicates and losses are reported, and must be zero). The stations publish a realistic mix:
pool sessions of a tube, five persons (CCCD QR) and a close. Each phase also reports the CPU
time the ingest worker processes (and Mosquitto, and the publishing bench process) used per
record: on a shared or small machine that is the figure to compare, as rates depend on what
else runs. Results print as a table and are saved with the machine and the load average in
``bench/results/ingest[-quick].json`` (or ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import shlex
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.identity import uuid7
from protocol import Record, encode
from protocol.topics import StationTopic, subscription, topic
from swabline.broker import SERVER_USER, Broker

POSTGRES_ADMIN = os.environ.get(
    "SWABLINE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


# --- simulated stations ----------------------------------------------------------------------


def session_records(station_id: str, session: int, start_seq: int, persons: int) -> list[Record]:
    """One pool session, as a station running the sampling workflow records it."""
    tube = f"{station_id.upper()}-{session:07d}"
    seq = start_seq
    now = time.time()

    def rec(kind: str, data: dict[str, Any], code: str | None = None) -> Record:
        nonlocal seq
        r = Record(
            record_id=uuid7(),  # as the agent makes them (time-ordered)
            station_id=station_id,
            seq=seq,
            boot_id="bench",
            wall_time=now,
            mono_ns=seq,
            clock_synced=True,
            kind=kind,
            code=code,
            data=data,
        )
        seq += 1
        return r

    out = [
        rec(
            "tube_opened",
            {"tube": tube, "mode": "pool", "pool_size": persons, "test_kind": "rt_pcr"},
            tube,
        )
    ]
    for i in range(1, persons + 1):
        serial = (session * persons + i) % 10**6
        key = f"0{(session * 7 + i) % 96:02d}3{station_id[-2:].replace('-', '0')}{serial:06d}"
        name = "Nguyễn Thị Bình"
        address = "12 Lê Lợi, P. Bến Nghé, Q.1, TP. Hồ Chí Minh"
        qr = f"{key}|025123456|{name}|15082003|Nữ|{address}|20042021"
        person = {
            "key_type": "cccd",
            "key": key,
            "name": name,
            "birth_date": "2003-08-15",
            "sex": "female",
            "address": address,
            "old_id": "025123456",
            "issue_date": "2021-04-20",
        }
        out.append(rec("person_added", {"tube": tube, "person": person, "position": i}, qr))
    out.append(rec("pool_closed", {"tube": tube, "persons": persons, "reason": "full"}))
    return out


def workload(stations: list[str], per_station: int, first_seq: int = 1) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for sid in stations:
        records: list[Record] = []
        session = first_seq
        while len(records) < per_station:
            records.extend(session_records(sid, session, first_seq + len(records), 5))
            session += 1
        out[sid] = records[:per_station]
    return out


class SimStation:
    """A station's MQTT side (paho, as the agent): publishes records, timestamps acks."""

    def __init__(self, broker: Broker, station_id: str, *, inflight: int = 100) -> None:
        self.station_id = station_id
        self.topic = topic(station_id, StationTopic.RECORDS)
        self.sent_at: dict[str, float] = {}
        self.acked_at: dict[str, float] = {}
        self.ack_ids = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=station_id,  # the broker binds a station's credentials to this id
            protocol=mqtt.MQTTv5,
        )
        c.username_pw_set(station_id, broker.users[station_id])
        c.max_inflight_messages_set(inflight)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=60)
        c.loop_start()
        self.client = c
        if not self._connected.wait(10):
            raise RuntimeError(f"{station_id} did not connect")

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        c.subscribe(topic(self.station_id, StationTopic.ACKS), qos=1)
        time.sleep(0.05)
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        ids = json.loads(msg.payload)["record_ids"]
        with self._lock:
            self.ack_ids += len(ids)
            for rid in ids:
                self.acked_at.setdefault(rid, now)

    def publish(self, record_id: str, payload: bytes) -> None:
        self.sent_at[record_id] = time.monotonic()
        self.client.publish(self.topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- CPU accounting --------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


class CpuMeter:
    """CPU seconds used by some processes between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self._pids = pids
        self._start = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        self.used: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        self.used = {
            name: sum(cpu_seconds(p) for p in ps) - self._start[name]
            for name, ps in self._pids.items()
        }
        return self.used


def _broker_pid(broker: Broker) -> list[int]:
    proc = getattr(broker, "_proc", None)
    return [proc.pid] if proc is not None else []


# --- raw pass-through --------------------------------------------------------------------------


def _raw_subscriber(host: str, port: int, password: str, expect: int, ready: Any, out: Any) -> None:
    got = 0
    first = last = 0.0
    done = threading.Event()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        # As an ingest worker subscribes (server/ingest.py): shared, QoS 1.
        c.subscribe(subscription(StationTopic.RECORDS, shared_group="bench-raw"), qos=1)

    def on_subscribe(*_a: Any) -> None:
        ready.set()

    def on_message(_c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        nonlocal got, first, last
        now = time.monotonic()
        if got == 0:
            first = now
        got += 1
        last = now
        if got >= expect:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    c.username_pw_set(SERVER_USER, password)
    c.max_inflight_messages_set(1000)
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect(host, port, keepalive=30, clean_start=True)
    c.loop_start()
    done.wait(600)
    c.disconnect()
    c.loop_stop()
    out.put({"received": got, "first": first, "last": last})


@dataclass
class RawResult:
    messages: int
    seconds: float
    rate: float
    subscriber_cpu_us: float = 0.0
    """CPU of the paho subscriber process per message (receive + PUBACK, nothing else)."""
    broker_cpu_us: float = 0.0
    publisher_cpu_us: float = 0.0


def measure_raw(broker: Broker, payloads: dict[str, list[tuple[str, bytes]]]) -> RawResult:
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    total = sum(len(v) for v in payloads.values())
    proc = ctx.Process(
        target=_raw_subscriber,
        args=(broker.host, broker.port, broker.users[SERVER_USER], total, ready, out),
    )
    proc.start()
    assert proc.pid is not None  # set by start()
    if not ready.wait(20):
        raise RuntimeError("raw subscriber did not subscribe")
    stations = [SimStation(broker, sid) for sid in payloads]
    cpu = CpuMeter(
        {"subscriber": [proc.pid], "broker": _broker_pid(broker), "publisher": [os.getpid()]}
    )
    start = time.monotonic()
    _publish_all(stations, payloads)
    result = out.get(timeout=600)
    used = cpu.stop()
    proc.join(10)
    for s in stations:
        s.close()
    if result["received"] < total:
        raise RuntimeError(f"raw: {result['received']} of {total} arrived")
    seconds = result["last"] - start
    return RawResult(
        total,
        seconds,
        total / seconds,
        subscriber_cpu_us=used["subscriber"] / total * 1e6,
        broker_cpu_us=used["broker"] / total * 1e6,
        publisher_cpu_us=used["publisher"] / total * 1e6,
    )


def _publish_all(stations: list[SimStation], payloads: dict[str, list[tuple[str, bytes]]]) -> None:
    """Every station publishes its records as fast as it can, interleaved, one thread."""
    queues = [(s, payloads[s.station_id]) for s in stations]
    longest = max(len(p) for _, p in queues)
    for i in range(longest):
        for s, items in queues:
            if i < len(items):
                rid, payload = items[i]
                s.publish(rid, payload)


# --- ingest -------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    db: str
    workers: int
    records: int
    seconds: float
    rate: float
    ratio_to_raw: float = 0.0
    duplicates: int = 0
    lost: int = 0
    acks_missing: int = 0
    latency_rate: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    worker_cpu_us: float = 0.0
    """CPU of the ingest worker process(es) per record, all threads (receive, validate, store,
    acknowledge); on SQLite this includes the database engine, on PostgreSQL it does not."""
    database_cpu_us: float = 0.0
    """PostgreSQL server processes' CPU per record (0 for SQLite, which runs in the worker)."""
    broker_cpu_us: float = 0.0
    publisher_cpu_us: float = 0.0
    mean_batch: float = 0.0
    """Messages per committed transaction."""
    notes: list[str] = field(default_factory=list)


class Database:
    """A fresh SQLite file or PostgreSQL database for one phase."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self._name: str | None = None
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / f'bench-{secrets.token_hex(4)}.db'}"
        else:
            import psycopg

            self._name = f"swabline_bench_{secrets.token_hex(6)}"
            self._admin = POSTGRES_ADMIN.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(self._admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self._name}"')
            self.url = f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{self._name}"

    def server_pids(self) -> list[int]:
        """PostgreSQL backends serving this database (the ingest workers' connections)."""
        if not self._name:
            return []
        import psycopg

        with psycopg.connect(self._admin, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self._name,)
            ).fetchall()
        return [int(pid) for (pid,) in rows]

    def drop(self) -> None:
        if self._name:
            import psycopg

            with psycopg.connect(self._admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')


def _start_workers(
    broker: Broker, db: Database, workers: int, batch_rows: int, batch_ms: int
) -> Any:
    from server.config import ServerConfig
    from server.db import make_engine, migrate
    from server.workers import WorkerPool

    engine = make_engine(db.url)
    migrate(engine)
    engine.dispose()
    config = ServerConfig.model_validate(
        {
            "database": {"url": db.url},
            "mqtt": {"host": broker.host, "port": broker.port, "username": SERVER_USER},
            "ingest": {"batch_max_rows": batch_rows, "batch_max_ms": batch_ms},
        }
    )
    level = os.environ.get("SWABLINE_BENCH_LOG_LEVEL", "WARNING")
    pool = WorkerPool(config, workers, password=broker.users[SERVER_USER], log_level=level)
    pool.start()
    return pool


def _warm_up(broker: Broker, stations: list[str], workers: int) -> None:
    """Until every worker answers (each station's records land somewhere), and station rows
    exist. Uses seqs far above the measured ones."""
    sims = [SimStation(broker, sid) for sid in stations]
    try:
        deadline = time.monotonic() + 120
        pending = {
            s.station_id: workload([s.station_id], 5 * workers, first_seq=10**9)[s.station_id]
            for s in sims
        }
        while True:
            waiting = [
                (s, r) for s in sims for r in pending[s.station_id] if r.record_id not in s.acked_at
            ]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the ingest workers did not answer")
            for s, r in waiting:  # resend, as a station does: the workers may not be up yet
                s.publish(r.record_id, encode(r))
            time.sleep(1)
    finally:
        for s in sims:
            s.close()


def _check_db(db: Database, records: dict[str, list[Record]]) -> tuple[int, int]:
    """(duplicates, lost) of the measured records in the database."""
    from sqlalchemy import func, select

    from server.db import make_engine
    from server.models import RecordRow

    engine = make_engine(db.url)
    ids = {r.record_id for rs in records.values() for r in rs}
    with engine.connect() as conn:
        rows = conn.execute(
            select(RecordRow.record_id, func.count())
            .where(RecordRow.seq < 10**9)
            .group_by(RecordRow.record_id)
        ).all()
    engine.dispose()
    stored = {rid: n for rid, n in rows}
    duplicates = sum(n - 1 for n in stored.values()) + len(set(stored) - ids)
    lost = len(ids - set(stored))
    return duplicates, lost


def measure_ingest(
    broker: Broker,
    kind: str,
    workers: int,
    records: dict[str, list[Record]],
    workdir: Path,
    *,
    batch_rows: int,
    batch_ms: int,
    rate: float | None = None,
) -> IngestResult:
    """Publish every record (as fast as possible, or at ``rate`` records/s) and wait for acks."""
    db = Database(kind, workdir)
    pool = _start_workers(broker, db, workers, batch_rows, batch_ms)
    try:
        _warm_up(broker, list(records), workers)
        payloads = {sid: [(r.record_id, encode(r)) for r in rs] for sid, rs in records.items()}
        sims = [SimStation(broker, sid) for sid in records]
        total = sum(len(v) for v in payloads.values())
        counters = [pool.counters.worker(i) for i in range(workers)]
        messages0 = sum(c.get("messages") for c in counters)
        batches0 = sum(c.get("batches") for c in counters)
        cpu = CpuMeter(
            {
                "worker": pool.pids(),
                "database": db.server_pids(),
                "broker": _broker_pid(broker),
                "publisher": [os.getpid()],
            }
        )
        start = time.monotonic()
        if rate is None:
            _publish_all(sims, payloads)
        else:
            _publish_paced(sims, payloads, rate)
        deadline = time.monotonic() + max(120.0, total / 200)
        while sum(len(s.acked_at) for s in sims) < total and time.monotonic() < deadline:
            time.sleep(0.01)
        used = cpu.stop()
        acked = [t for s in sims for t in s.acked_at.values()]
        end = max(acked) if acked else time.monotonic()
        result = IngestResult(kind, workers, total, end - start, total / (end - start))
        result.worker_cpu_us = used["worker"] / total * 1e6
        result.database_cpu_us = used["database"] / total * 1e6
        result.broker_cpu_us = used["broker"] / total * 1e6
        result.publisher_cpu_us = used["publisher"] / total * 1e6
        batches = sum(c.get("batches") for c in counters) - batches0
        messages = sum(c.get("messages") for c in counters) - messages0
        result.mean_batch = messages / batches if batches else 0.0
        result.acks_missing = total - len(acked)
        if rate is not None:
            latencies = sorted(
                (s.acked_at[rid] - s.sent_at[rid]) * 1000 for s in sims for rid in s.acked_at
            )
            result.latency_rate = rate
            result.latency_p50_ms = statistics.median(latencies)
            result.latency_p99_ms = latencies[int(len(latencies) * 0.99) - 1]
            result.latency_max_ms = latencies[-1]
        for s in sims:
            s.close()
    finally:
        pool.stop()
    result.duplicates, result.lost = _check_db(db, records)
    db.drop()
    return result


def _publish_paced(
    stations: list[SimStation], payloads: dict[str, list[tuple[str, bytes]]], rate: float
) -> None:
    order = []
    longest = max(len(p) for p in payloads.values())
    for i in range(longest):
        for s in stations:
            items = payloads[s.station_id]
            if i < len(items):
                order.append((s, items[i]))
    start = time.monotonic()
    for n, (s, (rid, payload)) in enumerate(order):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s.publish(rid, payload)


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[IngestResult]:
    stations = [f"st-{i}" for i in range(1, args.stations + 1)]
    per_station = args.records // len(stations)
    users = {SERVER_USER: secrets.token_urlsafe(12)}
    users.update({sid: secrets.token_urlsafe(12) for sid in stations})
    results: list[IngestResult] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="swabline-bench-") as tmp:
        workdir = Path(tmp)
        with Broker(workdir / "broker", users=users) as broker:
            raw_records = workload(stations, per_station)
            raw_payloads = {
                sid: [(r.record_id, encode(r)) for r in rs] for sid, rs in raw_records.items()
            }
            raw = measure_raw(broker, raw_payloads)
            print(
                f"raw QoS 1 pass-through: {raw.rate:,.0f} msg/s ({raw.messages} messages)",
                file=sys.stderr,
            )
            for kind in args.db:
                one = measure_ingest(
                    broker,
                    kind,
                    1,
                    workload(stations, per_station),
                    workdir,
                    batch_rows=args.batch_rows,
                    batch_ms=args.batch_ms,
                )
                one.ratio_to_raw = one.rate / raw.rate
                print(f"{kind}, 1 worker: {one.rate:,.0f} rec/s", file=sys.stderr)
                if not args.quick:
                    paced = measure_ingest(
                        broker,
                        kind,
                        1,
                        workload(stations, per_station),
                        workdir,
                        batch_rows=args.batch_rows,
                        batch_ms=args.batch_ms,
                        rate=one.rate / 2,
                    )
                    one.latency_rate = paced.latency_rate
                    one.latency_p50_ms = paced.latency_p50_ms
                    one.latency_p99_ms = paced.latency_p99_ms
                    one.latency_max_ms = paced.latency_max_ms
                    one.duplicates += paced.duplicates
                    one.lost += paced.lost
                    one.acks_missing += paced.acks_missing
                results.append(one)
                two = measure_ingest(
                    broker,
                    kind,
                    2,
                    workload(stations, per_station),
                    workdir,
                    batch_rows=args.batch_rows,
                    batch_ms=args.batch_ms,
                )
                two.ratio_to_raw = two.rate / raw.rate
                print(f"{kind}, 2 workers: {two.rate:,.0f} rec/s", file=sys.stderr)
                results.append(two)
    print_table(raw, results)
    payload = {
        "command": "python -m bench.bench_ingest " + shlex.join(argv_shown(args)),
        "load_average_before": load_before,
        "raw": asdict(raw),
        "results": [asdict(r) for r in results],
        "records": per_station * len(stations),
        "stations": len(stations),
        "batch_max_rows": args.batch_rows,
        "batch_max_ms": args.batch_ms,
    }
    if args.json:
        from bench.common import machine_info

        payload["machine"] = machine_info()
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nsaved {args.json}", file=sys.stderr)
    else:
        from bench.common import write_results

        path = write_results("ingest-quick" if args.quick else "ingest", payload)
        print(f"\nsaved {path}", file=sys.stderr)
    return results


def argv_shown(args: argparse.Namespace) -> list[str]:
    out = ["--records", str(args.records), "--stations", str(args.stations), "--db", *args.db]
    out += ["--batch-rows", str(args.batch_rows), "--batch-ms", str(args.batch_ms)]
    return [*out, "--quick"] if args.quick else out


def print_table(raw: RawResult, results: list[IngestResult]) -> None:
    print(
        f"\nRaw Mosquitto QoS 1 pass-through (paho -> paho): {raw.rate:,.0f} msg/s "
        f"(subscriber CPU {raw.subscriber_cpu_us:.0f} µs/msg, broker {raw.broker_cpu_us:.0f}, "
        f"publisher {raw.publisher_cpu_us:.0f})\n"
    )
    head = (
        f"{'database':<10} {'workers':>7} {'records':>8} {'rec/s':>9} {'÷ raw':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'at rec/s':>9} {'dups':>5} {'lost':>5} {'no ack':>6} "
        f"{'worker µs':>9} {'db µs':>6} {'batch':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        lat = (
            f"{r.latency_p50_ms:>7.1f} {r.latency_p99_ms:>7.1f} {r.latency_rate:>9,.0f}"
            if r.latency_rate
            else f"{'-':>7} {'-':>7} {'-':>9}"
        )
        print(
            f"{r.db:<10} {r.workers:>7} {r.records:>8} {r.rate:>9,.0f} {r.ratio_to_raw:>6.2f} "
            f"{lat} {r.duplicates:>5} {r.lost:>5} {r.acks_missing:>6} "
            f"{r.worker_cpu_us:>9.0f} {r.database_cpu_us:>6.0f} {r.mean_batch:>6.0f}"
        )
    print(
        "\nworker µs / db µs: CPU per record of the ingest worker process(es) and of the "
        "PostgreSQL backends serving them (max-rate phase).\n"
        "Goals: 1 worker >= 0.80 of raw; p99 scan-to-ack < 100 ms at half the max rate; "
        "0 duplicates, 0 lost."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--records", type=int, default=20_000, help="records per phase (20000)")
    p.add_argument("--stations", type=int, default=8, help="simulated stations (8)")
    p.add_argument(
        "--db", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    p.add_argument("--batch-rows", type=int, default=500, help="ingest.batch_max_rows (500)")
    p.add_argument("--batch-ms", type=int, default=50, help="ingest.batch_max_ms (50)")
    p.add_argument("--quick", action="store_true", help="skip the latency phase")
    p.add_argument(
        "--json", help="write the results to this file (default: bench/results/ingest[-quick].json)"
    )
    args = p.parse_args(argv)
    results = run(args)
    bad = [r for r in results if r.duplicates or r.lost or r.acks_missing]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
