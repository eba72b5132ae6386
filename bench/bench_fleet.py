"""Fleet benchmark: thousands of simulated stations heartbeating and scanning against the real
broker and server, while the fleet page is read and stations die and come back.

    python -m bench.bench_fleet                       # smoke: 2,000 stations for 120 s
    python -m bench.bench_fleet --duration-s 1800     # the 30-minute run for the record
    python -m bench.bench_fleet --stations 200 --duration-s 60 --json-out /tmp/fleet.json

Measures (printed as a table, and written as JSON with the machine, the load average and the
command to ``bench/results/fleet-STATIONS-DURATIONs.json``, which ``python -m bench.report``
turns into the fleet table of BENCHMARKS.md; ``--json-out FILE`` writes elsewhere):

- response time of the fleet page (``/ops``, HTML) and of ``/api/ops/fleet`` (what the page
  fetches to update itself): p50, p95, p99, max, after a warm-up;
- how long a status change takes to show in the API: a station killed (its TCP connection cut
  without DISCONNECT, so the broker publishes its will) -> ``offline``; the station back (a new
  birth) -> ``online``; a station that hangs (stays connected, but sends no heartbeat and no
  record) -> ``stale``;
- the server's memory (every process: the web/ops process and the ingest workers), sampled
  every 10 s: after warm-up, at the end, peak, and the slope of a least-squares line;
- what the simulated fleet sent and how much of it the server acknowledged.

What is simulated: each station is a real MQTT 5 connection authenticated as that station (so
the broker's ACLs, wills, retained births and per-client queues are all exercised), with a
birth/death sequence number, a will, heartbeats carrying every health field, and scan records
at QoS 1 that it forgets only when the server acknowledges them. The connections are
multiplexed by a few threads with ``selectors`` and paho's external-loop API instead of
thousands of agent processes; there is no TinyDB outbox, scanner or LED behind them.
"""

from __future__ import annotations

import argparse
import heapq
import http.cookiejar
import json
import math
import os
import random
import secrets
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import RESULTS, machine_info
from protocol import Ack, Heartbeat, Record, Status, decode, encode
from protocol.topics import StationTopic, topic
from server.config import load_config
from server.ops.status import shown_within_s
from swabline.broker import SERVER_USER, Broker, free_port

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password-0123"


# --- simulated stations -------------------------------------------------------------------------


@dataclass(eq=False)
class SimStation:
    station_id: str
    password: str
    rng: random.Random
    bd_seq: int = 0
    seq: int = 0
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.monotonic)
    client: mqtt.Client | None = None
    connected: bool = False
    alive: bool = True
    silent: bool = False
    unacked: dict[str, Record] = field(default_factory=dict)
    scans_today: int = 0
    last_scan_at: float | None = None
    connections: int = 0
    published: int = 0
    acked: int = 0
    heartbeats: int = 0

    def heartbeat(self) -> Heartbeat:
        now = time.time()
        oldest = min(r.wall_time for r in self.unacked.values()) if self.unacked else None
        return Heartbeat(
            time=now,
            uptime_s=time.monotonic() - self.started,
            outbox_depth=len(self.unacked),
            agent_version="bench",
            boot_id=self.boot_id,
            heartbeat_s=SIM.heartbeat_s,
            clock_synced=True,
            clock_offset_s=round(self.rng.uniform(-0.05, 0.05), 3),
            oldest_pending_age_s=None if oldest is None else round(now - oldest, 2),
            scans_today=self.scans_today,
            last_scan_at=self.last_scan_at,
            scanners_connected=1,
            scanners_expected=1,
            cpu_temp_c=round(self.rng.uniform(45, 70), 1),
            load_avg=round(self.rng.uniform(0.1, 1.5), 2),
            mem_total_mb=3800.0,
            mem_available_mb=round(self.rng.uniform(2000, 3000)),
            disk_total_mb=29000.0,
            disk_free_mb=round(self.rng.uniform(15000, 25000)),
            wifi_signal_dbm=round(self.rng.uniform(-80, -45)),
            mqtt_reconnects=max(0, self.connections - 1),
            under_voltage=False,
            throttled=False,
            throttled_flags=0,
        )

    def record(self) -> Record:
        self.seq += 1
        now = time.time()
        self.scans_today += 1
        self.last_scan_at = now
        return Record(
            record_id=str(uuid.uuid4()),
            station_id=self.station_id,
            seq=self.seq,
            boot_id=self.boot_id,
            wall_time=now,
            mono_ns=time.monotonic_ns(),
            clock_synced=True,
            kind="scan",
            code=f"BENCH-{self.station_id}-{self.seq:06d}",
        )


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    heartbeat_s: float = 10.0
    scans_per_hour: float = 60.0


SIM = SimConfig()


class Mux(threading.Thread):
    """Drives many stations' MQTT connections from one thread (paho's external loop)."""

    def __init__(self, stations: list[SimStation], stop: threading.Event, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stations = stations
        self.stop = stop
        self.sel = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, str, SimStation]] = []
        self.counter = 0
        self.writers: set[SimStation] = set()
        self.commands: list[tuple[str, SimStation]] = []
        self.guard = threading.Lock()
        self.ready = threading.Event()

    def schedule(self, at: float, kind: str, st: SimStation) -> None:
        self.counter += 1
        heapq.heappush(self.timers, (at, self.counter, kind, st))

    def ask(self, action: str, st: SimStation) -> None:
        """Kill, revive, silence or wake a station from another thread."""
        with self.guard:
            self.commands.append((action, st))

    def connect(self, st: SimStation) -> None:
        st.bd_seq += 1
        st.connections += 1
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=st.station_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(st.station_id, st.password)
        status = topic(st.station_id, StationTopic.STATUS)
        death = Status(state="offline", bd_seq=st.bd_seq, time=time.time(), agent_version="bench")
        client.will_set(status, encode(death), qos=1, retain=True)
        client.max_inflight_messages_set(100)

        def on_connect(c: mqtt.Client, _u: object, _f: object, rc: Any, _p: object) -> None:
            if rc.is_failure:
                return
            c.subscribe(topic(st.station_id, StationTopic.ACKS), qos=1)
            birth = Status(
                state="online", bd_seq=st.bd_seq, time=time.time(), agent_version="bench"
            )
            c.publish(status, encode(birth), qos=1, retain=True)
            st.connected = True
            for record in list(st.unacked.values()):  # resend what waits, as an agent does
                c.publish(topic(st.station_id, StationTopic.RECORDS), encode(record), qos=1)
            self.writers.add(st)

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            try:
                ack = decode(Ack, bytes(msg.payload))
            except ValueError:
                return
            for rid in ack.record_ids:
                if st.unacked.pop(rid, None) is not None:
                    st.acked += 1

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect(SIM.host, SIM.port, keepalive=60)
        st.client = client
        sock = client.socket()
        assert sock is not None
        self.sel.register(sock, selectors.EVENT_READ, st)
        st.alive = True

    def kill(self, st: SimStation) -> None:
        """Cut the connection without DISCONNECT, as a power cut does: the broker sends the will."""
        client = st.client
        if client is None:
            return
        sock = client.socket()
        if sock is not None:
            self.sel.unregister(sock)
            sock.close()
        st.client, st.connected, st.alive = None, False, False
        self.writers.discard(st)

    def publish(self, st: SimStation, kind: str) -> None:
        client = st.client
        if client is None or not st.connected:
            return
        if kind == "hb":
            client.publish(topic(st.station_id, StationTopic.HEARTBEAT), encode(st.heartbeat()), 0)
            st.heartbeats += 1
        else:
            record = st.record()
            st.unacked[record.record_id] = record
            client.publish(topic(st.station_id, StationTopic.RECORDS), encode(record), 1)
            st.published += 1
        if client.want_write():
            self.writers.add(st)

    def run(self) -> None:
        now = time.monotonic()
        for st in self.stations:
            self.connect(st)
            self.schedule(now + st.rng.uniform(0, SIM.heartbeat_s), "hb", st)
            self.schedule(now + self._next_scan(st), "scan", st)
        self.ready.set()
        last_misc = time.monotonic()
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.05):
                st = key.data
                if st.client is not None and st.client.loop_read(100) != mqtt.MQTT_ERR_SUCCESS:
                    self.kill(st)
                    self.connect(st)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, kind, st = heapq.heappop(self.timers)
                if kind == "hb":
                    if st.alive and not st.silent:
                        self.publish(st, "hb")
                    self.schedule(now + SIM.heartbeat_s, "hb", st)
                else:
                    if st.alive and not st.silent:
                        self.publish(st, "scan")
                    self.schedule(now + self._next_scan(st), "scan", st)
            with self.guard:
                actions, self.commands = self.commands, []
            for action, st in actions:
                if action == "kill":
                    self.kill(st)
                elif action == "revive":
                    self.connect(st)
                elif action == "silence":
                    st.silent = True
                elif action == "wake":
                    st.silent = False
            for st in list(self.writers):
                if st.client is None:
                    self.writers.discard(st)
                    continue
                st.client.loop_write()
                if not st.client.want_write():
                    self.writers.discard(st)
            if now - last_misc >= 1.0:
                last_misc = now
                for st in self.stations:
                    if st.client is not None:
                        st.client.loop_misc()
                        if st.client.want_write():
                            self.writers.add(st)
        for st in self.stations:
            if st.client is not None:
                st.client.disconnect()
                st.client.loop_write()

    @staticmethod
    def _next_scan(st: SimStation) -> float:
        if SIM.scans_per_hour <= 0:
            return 10**9
        return st.rng.expovariate(SIM.scans_per_hour / 3600)


# --- the server ---------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def swabline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swabline", *args],
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
    )


def prepare_database(conf: Path, db_url: str, stations: list[str], workdir: Path) -> None:
    """A province of districts and facilities, an admin with a token, the stations registered."""
    districts, per_district = 12, 10
    rows = ["code,name,kind,parent_code,facility_kind", "BENCH,Tỉnh Bench,province,,"]
    facilities = []
    for d in range(districts):
        rows.append(f"BENCH-D{d:02d},Quận {d + 1},district,BENCH,")
        for f in range(per_district):
            code = f"BENCH-D{d:02d}-F{f:02d}"
            rows.append(f"{code},Trạm y tế {d + 1}.{f + 1},facility,BENCH-D{d:02d},sampling")
            facilities.append(code)
    pw = workdir / "admin.password"
    pw.write_text(PASSWORD)
    swabline(
        "admin",
        "--config",
        str(conf),
        "bootstrap",
        "--username",
        "bench",
        "--password-file",
        str(pw),
        "--province-code",
        "BENCH",
        "--province-name",
        "Tỉnh Bench",
        "--token-file",
        str(workdir / "token"),
        "--days",
        "2",
    )
    csv = workdir / "orgs.csv"
    csv.write_text("\n".join(rows[:1] + rows[2:]) + "\n")
    swabline("admin", "--config", str(conf), "import-orgs", str(csv))

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from server.db import make_engine
    from server.models import Organisation, StationRow

    engine = make_engine(db_url)
    with Session(engine) as s, s.begin():
        ids = dict(s.execute(select(Organisation.code, Organisation.id)).all())
        for i, sid in enumerate(stations):
            s.add(
                StationRow(
                    station_id=sid,
                    name=f"Bàn {i % 20 + 1}",
                    state="unknown",
                    bd_seq=-1,
                    max_seq=0,
                    record_count=0,
                    active=True,
                    facility_id=ids[facilities[i % len(facilities)]],
                )
            )
    engine.dispose()


class Server:
    def __init__(
        self,
        workdir: Path,
        broker: Broker,
        db_url: str,
        workers: int,
        memory_trace: Path | None = None,
        trace_interval_s: float = 60.0,
        tracemalloc: bool = False,
    ) -> None:
        self.workdir = workdir
        self.memory_trace = memory_trace
        self.trace_interval_s = trace_interval_s
        self.tracemalloc = tracemalloc
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        secret = workdir / "server.secret"
        secret.write_text(broker.users[SERVER_USER])
        self.conf = workdir / "server.toml"
        self.conf.write_text(
            f'[database]\nurl = "{db_url}"\n\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'username = "{SERVER_USER}"\npassword_file = "{secret}"\n\n'
            f'[http]\nhost = "127.0.0.1"\nport = {self.port}\n\n'
            f"[ingest]\nworkers = {workers}\n\n"
            f"[ops]\nheartbeat_s = {SIM.heartbeat_s}\n"
        )
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = _env()
        if self.memory_trace is not None:
            env["SWABLINE_MEMORY_TRACE"] = str(self.memory_trace)
            env["SWABLINE_MEMORY_TRACE_INTERVAL_S"] = str(self.trace_interval_s)
        if self.tracemalloc:
            env["PYTHONTRACEMALLOC"] = "1"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "swabline",
                    "--log-level",
                    "WARNING",
                    "server",
                    "--config",
                    str(self.conf),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log.read_text()}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pids(self) -> dict[str, int]:
        """The server process and its children (the ingest workers)."""
        assert self.proc is not None
        out = {"server": self.proc.pid}
        for n, child in enumerate(_children(self.proc.pid)):
            out[f"child-{n}"] = child
        return out


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return sorted(set(found))


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# --- measurements -------------------------------------------------------------------------------


class Http:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        jar = http.cookiejar.CookieJar()
        self.session = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        body = json.dumps({"username": "bench", "password": PASSWORD}).encode()
        req = urllib.request.Request(
            base + "/api/auth/login", body, {"Content-Type": "application/json"}
        )
        self.session.open(req, timeout=30).read()

    def api(self, path: str) -> Any:
        req = urllib.request.Request(
            self.base + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def timed(self, path: str, *, page: bool) -> tuple[float, int]:
        started = time.perf_counter()
        if page:
            with self.session.open(self.base + path, timeout=30) as r:
                size = len(r.read())
        else:
            req = urllib.request.Request(
                self.base + path, headers={"Authorization": f"Bearer {self.token}"}
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                size = len(r.read())
        return time.perf_counter() - started, size


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def slope_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs = [t / 60 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def wait_status(http_: Http, station_id: str, wanted: str, timeout: float) -> float | None:
    """Seconds until the API shows ``wanted`` for the station (polled every 0.2 s)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if http_.api(f"/api/ops/stations/{station_id}")["state"] == wanted:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_fleet",
        description="Simulated fleet against the real broker and server: fleet page latency, "
        "status change latency, server memory over time.",
    )
    p.add_argument("--stations", type=int, default=2000, help="simulated stations (2000)")
    p.add_argument("--heartbeat-s", type=float, default=10.0, help="heartbeat interval (10)")
    p.add_argument("--scans-per-hour", type=float, default=60.0, help="per station (60)")
    p.add_argument(
        "--duration-s", type=float, default=120.0, help="measured run (120; 1800 for the record)"
    )
    p.add_argument("--warmup-s", type=float, default=30.0, help="ignored at the start (30)")
    p.add_argument("--threads", type=int, default=4, help="threads driving the stations (4)")
    p.add_argument("--page-interval-s", type=float, default=1.0, help="between page reads (1)")
    p.add_argument("--probe-every-s", type=float, default=40.0, help="between status probes (40)")
    p.add_argument("--ingest-workers", type=int, default=1, help="server ingest processes (1)")
    p.add_argument("--db-url", default=None, help="database (default: SQLite in the work dir)")
    p.add_argument("--workdir", type=Path, default=None, help="keep files here (default: temp)")
    p.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="write the results here (default: bench/results/fleet-STATIONS-DURATIONs.json)",
    )
    p.add_argument(
        "--memory-trace",
        action="store_true",
        help="have the server sample where its memory goes (server/memory.py) and put the "
        "samples in the results",
    )
    p.add_argument(
        "--trace-interval-s", type=float, default=60.0, help="between memory samples (60)"
    )
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="with --memory-trace: also run the server under tracemalloc, to name the source "
        "lines that grew (slows the server: for diagnosis, not for the page timings)",
    )
    args = p.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.bench_fleet", *(argv or sys.argv[1:])])
    machine = machine_info()  # before the run: the load average of a quiet machine

    SIM.heartbeat_s, SIM.scans_per_hour = args.heartbeat_s, args.scans_per_hour
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="swabline-bench-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = args.db_url or f"sqlite:///{workdir / 'fleet.db'}"
    ids = [f"bench-{i:05d}" for i in range(args.stations)]
    users = {SERVER_USER: secrets.token_urlsafe(12)} | {
        sid: secrets.token_urlsafe(8) for sid in ids
    }
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.stations + 1024)), hard)
        )
    except (ImportError, ValueError, OSError):
        pass

    print(
        f"work dir {workdir}; {args.stations} stations, heartbeat {args.heartbeat_s} s, "
        f"{args.scans_per_hour} scans/h each, {args.duration_s:.0f} s measured",
        flush=True,
    )
    broker = Broker(workdir / "broker", users=users).start()
    SIM.host, SIM.port = broker.host, broker.port
    trace_path = workdir / "memory-trace.jsonl" if args.memory_trace else None
    server = Server(
        workdir,
        broker,
        db_url,
        args.ingest_workers,
        memory_trace=trace_path,
        trace_interval_s=args.trace_interval_s,
        tracemalloc=args.tracemalloc,
    )
    stop = threading.Event()
    muxes: list[Mux] = []
    results: dict[str, Any] = {}
    try:
        ops = load_config(server.conf).ops  # the server's own status rules and page refresh
        prepare_database(server.conf, db_url, ids, workdir)
        server.start()
        token = (workdir / "token").read_text().strip()
        http_ = Http(server.url, token)
        stations = [SimStation(sid, users[sid], random.Random(n)) for n, sid in enumerate(ids)]
        for n in range(args.threads):
            mux = Mux(stations[n :: args.threads], stop, f"mux-{n}")
            muxes.append(mux)
            mux.start()
        for mux in muxes:
            mux.ready.wait()
        connected_at = time.monotonic()
        print(f"{args.stations} stations connected; warming up {args.warmup_s:.0f} s", flush=True)
        time.sleep(args.warmup_s)

        latencies: dict[str, list[float]] = {"/ops": [], "/api/ops/fleet": []}
        sizes: dict[str, int] = {}
        memory: dict[str, list[tuple[float, float]]] = {}
        probes: list[dict[str, Any]] = []
        cpu_start = {name: cpu_s(pid) for name, pid in server.pids().items()}
        started = time.monotonic()

        def reader() -> None:
            turn = 0
            while not stop.is_set() and time.monotonic() - started < args.duration_s:
                path = "/ops" if turn % 2 else "/api/ops/fleet"
                turn += 1
                try:
                    took, size = http_.timed(path, page=path == "/ops")
                    latencies[path].append(took)
                    sizes[path] = size
                except OSError as exc:
                    print(f"  read {path} failed: {exc}", flush=True)
                stop.wait(args.page_interval_s)

        def sampler() -> None:
            while not stop.is_set() and time.monotonic() - started < args.duration_s + 1:
                t = time.monotonic() - started
                for name, pid in server.pids().items():
                    mb = rss_mb(pid)
                    if mb is not None:
                        memory.setdefault(name, []).append((t, mb))
                if broker.pid:
                    mb = rss_mb(broker.pid)
                    if mb is not None:
                        memory.setdefault("mosquitto", []).append((t, mb))
                stop.wait(10)

        threads = [
            threading.Thread(target=reader, daemon=True),
            threading.Thread(target=sampler, daemon=True),
        ]
        for t in threads:
            t.start()
        rng = random.Random(7)
        while time.monotonic() - started < args.duration_s - 5:
            victim = stations[rng.randrange(len(stations))]
            mux = next(m for m in muxes if victim in m.stations)
            probe: dict[str, Any] = {"station": victim.station_id}
            mux.ask("kill", victim)
            probe["death_to_offline_s"] = wait_status(http_, victim.station_id, "offline", 60)
            mux.ask("revive", victim)
            probe["birth_to_online_s"] = wait_status(http_, victim.station_id, "online", 60)
            mux.ask("silence", victim)
            probe["silence_to_stale_s"] = wait_status(
                http_, victim.station_id, "stale", 10 * args.heartbeat_s
            )
            mux.ask("wake", victim)
            probes.append(probe)
            print(f"  probe {probe}", flush=True)
            remaining = args.probe_every_s - sum(v or 0 for k, v in probe.items() if k != "station")
            deadline = time.monotonic() + max(1.0, remaining)
            while time.monotonic() < deadline and time.monotonic() - started < args.duration_s - 5:
                time.sleep(0.5)
        for t in threads:
            t.join(timeout=args.duration_s + 60)
        elapsed = time.monotonic() - started
        cpu_end = {name: cpu_s(pid) for name, pid in server.pids().items()}

        def summary(values: list[float]) -> dict[str, float]:
            return {
                "n": len(values),
                "p50_ms": round(percentile(values, 50) * 1000, 1),
                "p95_ms": round(percentile(values, 95) * 1000, 1),
                "p99_ms": round(percentile(values, 99) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1) if values else math.nan,
            }

        def status_summary(key: str) -> dict[str, Any]:
            values = [p_[key] for p_ in probes if p_[key] is not None]
            return {
                "n": len(probes),
                "missed": sum(1 for p_ in probes if p_[key] is None),
                "median_s": round(statistics.median(values), 2) if values else None,
                "max_s": round(max(values), 2) if values else None,
            }

        sent = sum(s.published for s in stations)
        results = {
            "name": f"fleet-{args.stations}-{args.duration_s:.0f}s",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command,
            "machine": machine,
            "stations": args.stations,
            "heartbeat_s": args.heartbeat_s,
            "scans_per_hour_per_station": args.scans_per_hour,
            "duration_s": round(elapsed),
            "warmup_s": args.warmup_s,
            "database": db_url.split(":", 1)[0],
            "ingest_workers": args.ingest_workers,
            "pages": {
                path: summary(v) | {"bytes": sizes.get(path)} for path, v in latencies.items()
            },
            "status_change": {
                "death_to_offline": status_summary("death_to_offline_s"),
                "birth_to_online": status_summary("birth_to_online_s"),
                "silence_to_stale": status_summary("silence_to_stale_s"),
                "fleet_page_refresh_s": ops.page_refresh_s(),
                # The longest a hung station can take to show as stale on an open page.
                "stale_on_page_within_s": shown_within_s(ops.status_rules(), ops.page_refresh_s()),
                "two_heartbeat_intervals_s": 2 * args.heartbeat_s,
            },
            "memory_mb": {
                name: {
                    "first": round(points[0][1], 1),
                    "last": round(points[-1][1], 1),
                    "peak": round(max(v for _, v in points), 1),
                    "slope_mb_per_min": round(slope_per_min(points), 3),
                    "slope_second_half_mb_per_min": round(
                        slope_per_min(points[len(points) // 2 :]), 3
                    ),
                    "samples": [[round(t), round(v, 1)] for t, v in points],
                }
                for name, points in memory.items()
                if points
            },
            "memory_trace": read_trace(trace_path),
            "cpu_s": {
                name: round((cpu_end.get(name) or 0) - (cpu_start.get(name) or 0), 1)
                for name in cpu_end
                if cpu_start.get(name) is not None
            },
            "fleet": {
                "records_published": sent,
                "records_acknowledged": sum(s.acked for s in stations),
                "records_waiting_at_end": sum(len(s.unacked) for s in stations),
                "heartbeats_sent": sum(s.heartbeats for s in stations),
                "connected_for_s": round(time.monotonic() - connected_at),
            },
        }
    finally:
        stop.set()
        for mux in muxes:
            mux.join(timeout=10)
        server.stop()
        broker.stop()
    print_table(results)
    out = args.json_out or RESULTS / f"fleet-{args.stations}-{args.duration_s:.0f}s.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"\nJSON: {out}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def read_trace(path: Path | None) -> list[dict[str, Any]] | None:
    """The server's memory-trace samples (server/memory.py), or None when not traced."""
    if path is None or not path.exists():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def print_table(r: dict[str, Any]) -> None:
    if not r:
        return
    print(
        f"\n== Fleet benchmark: {r['stations']} stations, heartbeat {r['heartbeat_s']} s, "
        f"{r['duration_s']} s measured, {r['database']} =="
    )
    cols = ("n", "p50_ms", "p95_ms", "p99_ms", "max_ms", "bytes")
    print(f"{'endpoint':<18}" + "".join(f"{c:>10}" for c in cols))
    for path, s in r["pages"].items():
        print(f"{path:<18}" + "".join(f"{s[c] if s[c] is not None else '-':>10}" for c in cols))
    sc = r["status_change"]
    print(f"\n{'status change (API)':<22}{'n':>4}{'missed':>8}{'median s':>10}{'max s':>8}")
    for key in ("death_to_offline", "birth_to_online", "silence_to_stale"):
        s = sc[key]
        print(
            f"{key:<22}{s['n']:>4}{s['missed']:>8}{s['median_s'] or '-':>10}{s['max_s'] or '-':>8}"
        )
    print(
        f"(the fleet page fetches every {sc['fleet_page_refresh_s']} s; two heartbeat intervals = "
        f"{sc['two_heartbeat_intervals_s']} s)"
    )
    print(
        f"\n{'memory (RSS MB)':<16}{'first':>9}{'last':>9}{'peak':>9}{'MB/min':>9}{'2nd half':>10}"
    )
    for name, m in r["memory_mb"].items():
        print(
            f"{name:<16}{m['first']:>9}{m['last']:>9}{m['peak']:>9}{m['slope_mb_per_min']:>9}"
            f"{m['slope_second_half_mb_per_min']:>10}"
        )
    trace = r.get("memory_trace")
    if trace:
        keys = ("rss_mb", "malloc_in_use_mb", "malloc_free_mb", "sqlite_mb", "python_objects")
        print("\nserver memory trace: " + ", ".join(keys))
        for row in (trace[0], trace[len(trace) // 2], trace[-1]):
            print(f"  t={row['t_s']:>7} s  " + "  ".join(f"{row.get(k)}" for k in keys))
        for grew in trace[-1].get("top_growth", [])[:5]:
            print(f"  grew {grew['kb']:>9} kB  {grew['where']}")
    print(f"\ncpu seconds: {r['cpu_s']}")
    print(f"fleet: {r['fleet']}")


if __name__ == "__main__":
    sys.exit(main())
