"""The benchmark scenarios. Each returns the path of the JSON it wrote under bench/results/."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    fresh_postgres,
    machine_info,
    raw_passthrough,
    run_simulate,
    write_results,
)

QUICK_SUFFIX = "-quick"
SERVER_ARGS: list[str] = []
"""Extra ``swabline simulate`` options for every run (``python -m bench --server-source``)."""

DRAIN_TIMEOUT_S = 1800
"""``--drain-timeout`` of every run but the storm: time for the acknowledgements to catch up
after scanning stops. The largest full-size runs (4,000 records/s offered for 60 s, 100,000
waiting records) need up to about 10 minutes at 400 records/s."""
STORM_DRAIN_TIMEOUT_S = 3 * 3600
"""The 5,000 x 200 storm: 1,000,000 records at 100-500 records/s take 35 minutes to 3 hours."""
OVERHEAD_S = 1800
"""Child time beyond scanning and draining: starting the broker with every station's user and
the server, filling the offline backlog (1,000,000 records: up to a few minutes), connecting
10,000 stations, checking every record in the database, stopping."""


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _database(db: str) -> Iterator[list[str]]:
    if db == "postgres":
        with fresh_postgres() as url:
            yield ["--database-url", url]
    else:
        yield []  # simulate --spawn uses SQLite in its workdir


def _run(
    args: list[str], db: str, *, duration_s: float = 0, drain_timeout_s: float = DRAIN_TIMEOUT_S
) -> dict[str, Any]:
    args = [*args, "--drain-timeout", str(drain_timeout_s)]
    _say("swabline simulate --spawn " + " ".join(args))
    budget = duration_s + drain_timeout_s + OVERHEAD_S
    with _database(db) as dbargs:
        summary = run_simulate([*args, *SERVER_ARGS, *dbargs], timeout_s=budget)
    lat = summary["latency_s"]
    _say(
        f"  -> {summary['throughput_rps']:.0f} rec/s, p99 {lat['p99'] * 1000:.0f} ms, "
        f"acked {summary['acknowledged']}/{summary['sent']}, lost "
        f"{summary.get('database', {}).get('lost')}, drain {summary['drain_s']}"
    )
    return summary


def _raw(quick: bool) -> dict[str, Any]:
    _say("Mosquitto raw QoS 1 pass-through")
    raw = raw_passthrough(messages=50_000 if quick else 96_000)
    _say(f"  -> {raw['throughput_rps']:.0f} msg/s")
    return raw


def _name(base: str, quick: bool) -> str:
    return base + (QUICK_SUFFIX if quick else "")


def bench_raw(*, quick: bool, db: str) -> Path:
    machine = machine_info()
    return write_results(_name("raw", quick), {"raw": _raw(quick), "runs": []}, machine=machine)


def bench_scale(*, quick: bool, db: str) -> Path:
    """Throughput and p99 against the number of stations.

    ``fixed``: the same offered load (records/s) spread over N stations: does the number of
    connections cost anything? ``drain``: every station holds the same share of a fixed total
    backlog and all connect at once: the most the server absorbs with N stations connected.
    """
    machine = machine_info()
    stations = [50, 200, 500] if quick else [100, 1000, 5000, 10000]
    rate = 200 if quick else 1000
    duration = 15 if quick else 90
    total_backlog = 10_000 if quick else 100_000
    raw = _raw(quick)
    runs = []
    for n in stations:
        s = _run(
            ["--stations", str(n), "--rate", str(rate), "--duration", str(duration)],
            db,
            duration_s=duration,
        )
        runs.append({"series": "fixed", "stations": n, "summary": s})
    for n in stations:
        per = max(1, total_backlog // n)
        s = _run(["--stations", str(n), "--backlog", str(per)], db)
        runs.append({"series": "drain", "stations": n, "summary": s})
    return write_results(
        _name("scale", quick),
        {
            "raw": raw,
            "db": db,
            "fixed_rate_rps": rate,
            "duration_s": duration,
            "drain_total_records": total_backlog,
            "runs": runs,
        },
        machine=machine,
    )


def bench_rates(*, quick: bool, db: str) -> Path:
    """Throughput and p99 against the offered records per second, with a fixed fleet."""
    machine = machine_info()
    stations = 200 if quick else 1000
    rates = [100, 300, 1000] if quick else [250, 500, 1000, 2000, 4000]
    duration = 15 if quick else 60
    raw = _raw(quick)
    runs = []
    for r in rates:
        s = _run(
            ["--stations", str(stations), "--rate", str(r), "--duration", str(duration)],
            db,
            duration_s=duration,
        )
        runs.append({"series": "rate", "offered_rps": r, "summary": s})
    return write_results(
        _name("rates", quick),
        {"raw": raw, "db": db, "stations": stations, "duration_s": duration, "runs": runs},
        machine=machine,
    )


def bench_workers(*, quick: bool, db: str) -> Path:
    """1, 2 and 4 ingest workers in one MQTT 5 shared-subscription group, same backlog."""
    machine = machine_info()
    stations = 200 if quick else 1000
    per = 50 if quick else 100
    raw = _raw(quick)
    runs = []
    for w in (1, 2, 4):
        s = _run(
            ["--stations", str(stations), "--backlog", str(per), "--ingest-workers", str(w)], db
        )
        runs.append({"series": "workers", "workers": w, "summary": s})
    return write_results(
        _name("workers", quick),
        {"raw": raw, "db": db, "stations": stations, "backlog": per, "runs": runs},
        machine=machine,
    )


def bench_storm(*, quick: bool, db: str) -> Path:
    """5,000 stations with 200 records each waiting reconnect at once."""
    machine = machine_info()
    stations, per = (500, 20) if quick else (5000, 200)
    raw = _raw(quick)
    s = _run(
        ["--stations", str(stations), "--backlog", str(per)],
        db,
        drain_timeout_s=600 if quick else STORM_DRAIN_TIMEOUT_S,
    )
    return write_results(
        _name("storm", quick),
        {
            "raw": raw,
            "db": db,
            "stations": stations,
            "backlog": per,
            "runs": [{"series": "storm", "stations": stations, "summary": s}],
        },
        machine=machine,
    )
