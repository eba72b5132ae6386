"""``swabline simulate``: run N simulated stations against a broker and server, then report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from swabline.sim.fleet import Credentials, Fleet, SimOptions
from swabline.sim.procs import ResourceSampler
from swabline.sim.spawn import Spawned, SpawnError
from swabline.sim.staff import StaffProfile


class _Display:
    """A rich progress bar on stderr, or a status line every 10 s when stderr is no terminal."""

    def __init__(self, enabled: bool) -> None:
        self._live = enabled and sys.stderr.isatty()
        self._quiet = not enabled
        self._last_line = 0.0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Display:
        if self._live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("acknowledged", total=None, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def update(self, fleet: Fleet) -> None:
        m = fleet.metrics
        p99 = m.recent_p99_s()
        info = (
            f"{fleet.phase} · sent {m.created} · pending {m.pending} · "
            f"up {m.connected_now}/{len(fleet.stations)}"
            + ("" if math.isnan(p99) else f" · p99 {p99 * 1000:.0f} ms")
        )
        if self._progress is not None:
            self._progress.update(
                self._task, completed=m.acknowledged, total=fleet.target_records, info=info
            )
        elif not self._quiet and time.monotonic() - self._last_line >= 10:
            self._last_line = time.monotonic()
            print(f"simulate: acknowledged {m.acknowledged} · {info}", file=sys.stderr, flush=True)


def _credentials(args: argparse.Namespace, password: str | None) -> list[Credentials]:
    if args.credentials:
        creds = []
        for line in args.credentials.read_text().splitlines():
            parts = line.split()
            if parts and not parts[0].startswith("#"):
                creds.append(Credentials(parts[0], parts[1] if len(parts) > 1 else None))
        return creds[: args.stations]
    width = max(5, len(str(args.stations)))
    return [
        Credentials(f"{args.station_prefix}-{i:0{width}d}", password)
        for i in range(1, args.stations + 1)
    ]


def _options(args: argparse.Namespace) -> SimOptions:
    per_station = args.records_per_station
    if per_station is None and args.duration is None:
        per_station = max(50, args.backlog) if not args.backlog else args.backlog
    station = {
        key: getattr(args, key)
        for key in (
            "heartbeat_s",
            "resend_after_s",
            "resend_max_s",
            "max_inflight",
            "drain_per_s",
            "max_unacked",
            "reconnect_min_s",
            "reconnect_max_s",
        )
        if getattr(args, key) is not None
    }
    return SimOptions(
        **station,
        rate=args.rate if args.rate is not None else float(args.stations),
        records_per_station=per_station,
        duration_s=args.duration,
        busy_fraction=args.busy_fraction,
        backlog=args.backlog,
        drops_per_station_hour=args.drops_per_hour,
        outage_s=args.outage,
        storm_at_s=args.storm_at,
        storm_outage_s=args.storm_outage,
        storm_fraction=args.storm_fraction,
        connect_concurrency=args.connect_concurrency,
        drain_timeout_s=args.drain_timeout,
        seed=args.seed,
        profile=StaffProfile(
            pool_sizes=tuple(int(x) for x in args.pool_sizes.split(",")),
            single_fraction=args.single_fraction,
            undo_probability=args.undo_probability,
        ),
    )


def _check_args(args: argparse.Namespace) -> str | None:
    if args.spawn == bool(args.broker):
        return "give exactly one of --spawn or --broker HOST:PORT"
    if args.stations < 1:
        return "--stations must be at least 1"
    if not 0 < args.busy_fraction <= 1:
        return "--busy-fraction must be in (0, 1]"
    if args.rate is not None and args.rate <= 0:
        return "--rate must be positive"
    if args.broker and ":" not in args.broker:
        return "--broker must be HOST:PORT"
    if args.broker and not (args.password_file or args.credentials):
        return "with --broker, give --password-file or --credentials"
    if args.ingest_workers < 1:
        return "--ingest-workers must be at least 1"
    return None


async def _simulate(
    fleet: Fleet, sampler: ResourceSampler | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    task = asyncio.create_task(sampler.run()) if sampler else None
    try:
        result = await fleet.run()
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    resources = sampler.result() if sampler else {}
    return result, resources


def simulate(
    args: argparse.Namespace, spawned: Spawned | None, host: str, port: int, password: str | None
) -> dict[str, Any]:
    """Run the fleet and check the database; the full summary (also written as JSON)."""
    from sqlalchemy import create_engine

    from swabline.sim import verify

    creds = _credentials(args, password)
    db_url = spawned.database_url if spawned else args.database_url
    engine = create_engine(db_url) if db_url else None
    last = verify.last_seqs(engine, [c.station_id for c in creds]) if engine else {}
    groups: dict[str, list[int]] = dict(spawned.pids) if spawned else {}
    if args.watch_pid:
        groups["watched"] = list(args.watch_pid)
    sampler = ResourceSampler(groups) if groups else None
    with _Display(not args.no_progress) as display:
        fleet = Fleet(
            credentials=creds,
            host=host,
            port=port,
            options=_options(args),
            last_seqs=last,
            on_progress=display.update,
        )
        result, resources = asyncio.run(_simulate(fleet, sampler))
    summary: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["swabline", *sys.argv[1:]]) if sys.argv else "swabline simulate",
        "target": {
            "broker": f"{host}:{port}",
            "spawned": spawned is not None,
            "database": (db_url or "").split("://", 1)[0] or None,
            "ingest_workers": spawned.ingest_workers if spawned else None,
            "server_source": _describe_source(spawned.server_source) if spawned else None,
        },
        **result,
        "resources": resources,
    }
    if engine is not None:
        created = {s.station_id: s.outbox.created for s in fleet.stations}
        pending = {r.record_id for s in fleet.stations for r in s.outbox.pending()}
        summary["database"] = verify.check(engine, created=created, pending=pending)
        engine.dispose()
    return summary


def _describe_source(path: Path) -> str:
    """The checkout the server ran from, with its commit where git knows it."""
    import subprocess

    out = subprocess.run(
        ["git", "-C", str(path), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = out.stdout.strip()[:80]
    marker = path / "SOURCE_COMMIT"
    if not commit and marker.exists():
        commit = marker.read_text().strip()
    return f"{path} ({commit})" if commit else str(path)


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    lat = summary["latency_s"]
    table = Table(title="swabline simulate", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")

    def ms(v: float | None) -> str:
        return "-" if v is None or math.isnan(v) else f"{v * 1000:.0f} ms"

    db = summary.get("database")

    def checked(key: str) -> str:
        return str(db.get(key, "-")) if db else "not checked"

    rows: list[tuple[str, str]] = [
        ("stations", str(summary["stations"])),
        ("sent (records made)", str(summary["sent"])),
        ("acknowledged", str(summary["acknowledged"])),
        ("unacknowledged at the end", str(summary["unacknowledged"])),
        ("resent (publishes beyond one per record)", str(summary["resends"])),
        ("duplicates delivered (acknowledged again)", str(summary["repeat_acks"])),
        ("lost (acknowledged, not in the database)", checked("lost")),
        ("displaced (another record holds its seq)", checked("seq_taken")),
        ("refused by the server (kept as rejected)", checked("refused")),
        ("in the database", checked("stored")),
        ("in the database, acknowledgement not back", checked("stored_unacknowledged")),
        ("messages rejected by the server", checked("rejected")),
        ("connects / drops", f"{summary['connects']} / {summary['drops']}"),
        ("throughput (acknowledged/s)", f"{summary['throughput_rps']:.0f}"),
        ("drain time", "-" if summary["drain_s"] is None else f"{summary['drain_s']:.1f} s"),
        ("scan-to-ack p50 / p90 / p99", f"{ms(lat['p50'])} / {ms(lat['p90'])} / {ms(lat['p99'])}"),
    ]
    for name, res in summary.get("resources", {}).items():
        rows.append((f"{name} RSS max / CPU", f"{res['rss_max_mb']} MB / {res['cpu_s']} s"))
    for what, value in rows:
        table.add_row(what, value)
    Console(stderr=True).print(table)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem:
        print(f"swabline simulate: {problem}", file=sys.stderr)
        return 2
    workdir = args.workdir
    cleanup = False
    # SIGTERM ends the run like Ctrl-C: the broker and server it started are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    spawned: Spawned | None = None
    try:
        if args.spawn:
            if workdir is None:
                workdir, cleanup = Path(tempfile.mkdtemp(prefix="swabline-sim-")), True
            ids = [c.station_id for c in _credentials(args, None)]
            # The broker inherits this process's open-files limit: raise it first.
            from swabline.sim.fleet import raise_open_files_limit

            raise_open_files_limit(2 * len(ids) + 1024)
            spawned = Spawned(
                workdir,
                station_ids=ids,
                database_url=args.database_url,
                ingest_workers=args.ingest_workers,
                batch_max_rows=args.batch_max_rows,
                server_source=args.server_source,
            )
            spawned.start()  # on failure, ``finally`` stops whatever did start
            host, port, password = spawned.broker.host, spawned.broker.port, None
            password = spawned.station_password
        else:
            host, _, port_text = args.broker.rpartition(":")
            port = int(port_text)
            password = args.password_file.read_text().strip() if args.password_file else None
        summary = simulate(args, spawned, host, port, password)
        if spawned is not None:
            summary["startup_s"] = spawned.startup_s
    except SpawnError as exc:
        print(f"swabline simulate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("swabline simulate: interrupted", file=sys.stderr)
        return 130
    finally:
        if spawned is not None:
            spawned.stop()
        if cleanup and workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    db = summary.get("database") or {}
    from swabline.sim.verify import failures

    return 0 if summary["drained"] and not failures(db) else 1
