"""Public result lookup: does an unknown ID answer like a known one? And how fast are reports?

    python -m bench.bench_lookup                       # SQLite and PostgreSQL, default sizes
    python -m bench.bench_lookup --db sqlite --persons 2000 --requests 50 --samples 20000

1. **lookup timing**: a database with ``--persons`` people (each in a sampled, resulted tube);
   ``--requests`` POSTs of ``/lookup`` through the real web app (in-process ASGI, rate limits
   lifted) for each of: a known ID with the right date of birth, a known ID with a wrong date of
   birth, an unknown ID, a lookup code that does not exist. Prints p50/p90/mean per case and the
   ratio of each "not found" case to the known-ID-wrong-date case (the pair an attacker would
   compare). Requests of the cases are interleaved so that drift hits all of them alike.
2. **report build time**: ``--samples`` tubes spread over a month and 20 facilities; time to
   build the month's province report (``server.reports.build_report``), and the CSV and XLSX.

Results print as a table and, with ``--json FILE``, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import httpx
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from server.config import ServerConfig
from server.db import make_engine, migrate
from server.models import (
    Organisation,
    Person,
    PoolMember,
    Result,
    SampleEvent,
    Tube,
    table,
)
from server.report_files import to_csv, to_xlsx
from server.reports import Period, PeriodKind, build_report
from server.web import create_app

POSTGRES_ADMIN = os.environ.get(
    "SWABLINE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
VN = ZoneInfo("Asia/Ho_Chi_Minh")
MONTH = date(2026, 10, 1)


def _org_tree(db: Session, facilities: int) -> list[int]:
    def add(code: str, kind: str, parent: Organisation | None, fk: str | None) -> Organisation:
        o = Organisation(
            code=code,
            name=code,
            kind=kind,
            facility_kind=fk,
            active=True,
            path="",
            parent_id=parent.id if parent else None,
        )
        db.add(o)
        db.flush()
        o.path = f"{parent.path if parent else '/'}{o.id}/"
        return o

    province = add("P", "province", None, None)
    out = []
    for d in range(4):
        district = add(f"P-D{d}", "district", province, None)
        for f in range(facilities // 4):
            out.append(add(f"P-D{d}-F{f}", "facility", district, "sampling").id)
    db.flush()
    return out


def populate(engine: Engine, *, persons: int, samples: int, seed: int = 7) -> list[tuple[str, str]]:
    """Persons (CCCD, birth date) each in a resulted single tube, plus ``samples`` pooled tubes
    over a month. Returns the known (ID, birth date) pairs."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    known: list[tuple[str, str]] = []
    with Session(engine) as db, db.begin():
        facilities = _org_tree(db, 20)
        conn = db.connection()
        start = datetime.combine(MONTH, datetime.min.time(), VN).astimezone(UTC)
        person_rows: list[dict[str, Any]] = []
        tube_rows: list[dict[str, Any]] = []
        total = max(persons, samples)
        for i in range(total):
            key = f"0{i:011d}"
            dob = date(1950, 1, 1) + timedelta(days=rng.randrange(25_000))
            if i < persons:
                known.append((key, dob.isoformat()))
            person_rows.append(
                {
                    "key_type": "cccd",
                    "key": key,
                    "name": f"Người {i}",
                    "name_reliable": True,
                    "birth_date": dob.isoformat(),
                    "first_seen_at": now,
                    "last_seen_at": now,
                }
            )
            at = start + timedelta(seconds=rng.randrange(30 * 86400))
            tube_rows.append(
                {
                    "code": f"T-{i:08d}",
                    "facility_id": rng.choice(facilities),
                    "status": "resulted",
                    "result": rng.choice(["negative"] * 30 + ["positive"]),
                    "mode": "pool" if i % 3 else "single",
                    "test_kind": "rt_pcr",
                    "open_count": 1,
                    "opened_at": at,
                    "closed_at": at,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        conn.execute(insert(table(Person)), person_rows)
        conn.execute(insert(table(Tube)), tube_rows)
        ids = dict(conn.execute(select(Person.key, Person.id)).all())
        tids = dict(conn.execute(select(Tube.code, Tube.id)).all())
        members, events, results = [], [], []
        for i, (p, t) in enumerate(zip(person_rows, tube_rows, strict=True)):
            tid = tids[t["code"]]
            members.append(
                {
                    "tube_id": tid,
                    "person_id": ids[p["key"]],
                    "position": 1,
                    "record_id": str(uuid.uuid4()),
                    "station_id": "bench",
                    "seq": i + 1,
                    "retest": False,
                    "added_at": t["opened_at"],
                }
            )
            done = t["closed_at"] + timedelta(minutes=rng.randrange(60, 48 * 60))
            events.append(
                {
                    "tube_id": tid,
                    "kind": "collected",
                    "at": t["closed_at"],
                    "recorded_at": now,
                    "facility_id": t["facility_id"],
                }
            )
            events.append(
                {
                    "tube_id": tid,
                    "kind": "resulted",
                    "at": done,
                    "recorded_at": now,
                    "facility_id": None,
                }
            )
            results.append(
                {
                    "tube_id": tid,
                    "value": t["result"],
                    "source": "lab",
                    "reported_at": done,
                    "entered_at": now,
                }
            )
        conn.execute(insert(table(PoolMember)), members)
        conn.execute(insert(table(SampleEvent)), events)
        conn.execute(insert(table(Result)), results)
    return known


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


async def _lookups(
    app: Any, known: list[tuple[str, str]], requests: int, cases: dict[str, list[float]]
) -> None:
    rng = random.Random(11)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for _ in range(5):  # warm up
            await client.post("/lookup", data={"id_number": known[0][0], "birth_date": known[0][1]})
        for _ in range(requests):
            key, dob = rng.choice(known)
            forms = {
                "known ID, right date": {"id_number": key, "birth_date": dob},
                "known ID, wrong date": {"id_number": key, "birth_date": "1900-01-01"},
                "unknown ID": {"id_number": f"9{rng.randrange(10**11):011d}", "birth_date": dob},
                "unknown code": {"code": f"{rng.randrange(16**10):010X}"},
            }
            order = list(forms)
            rng.shuffle(order)
            for case in order:
                started = time.perf_counter()
                r = await client.post("/lookup", data=forms[case])
                cases[case].append(time.perf_counter() - started)
                found = 'data-status="found"' in r.text
                assert found == (case == "known ID, right date"), (case, r.status_code)


def bench(db: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(url)
    migrate(engine)
    t0 = time.perf_counter()
    known = populate(engine, persons=args.persons, samples=args.samples)
    with engine.begin() as conn:
        # Planner statistics, as autovacuum would have them after such a load (without them
        # PostgreSQL picks nested loops for the report's grouped joins).
        conn.exec_driver_sql("ANALYZE")
    populate_s = time.perf_counter() - t0
    config = ServerConfig.model_validate(
        {
            "public": {"lookup_per_addr": 10_000, "lookup_per_id": 10_000},
            "reports": {"schedule": False},
        }
    )
    app = create_app(engine, config=config)
    cases: dict[str, list[float]] = {
        "known ID, right date": [],
        "known ID, wrong date": [],
        "unknown ID": [],
        "unknown code": [],
    }
    anyio.run(_lookups, app, known, args.requests, cases)
    timing = {case: _stats(v) for case, v in cases.items()}
    base = timing["known ID, wrong date"]["p50_ms"]
    for case in ("unknown ID", "unknown code"):
        timing[case]["p50_ratio_to_known_wrong_date"] = round(timing[case]["p50_ms"] / base, 3)

    with Session(engine) as s:
        province = s.query(Organisation).filter_by(code="P").one()
        t0 = time.perf_counter()
        report = build_report(s, province, Period(PeriodKind.MONTH, MONTH), tz=VN)
        build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    csv_bytes = to_csv(report, "vi")
    xlsx_bytes = to_xlsx(report, "vi")
    files_s = time.perf_counter() - t0
    engine.dispose()
    return {
        "db": db,
        "persons": args.persons,
        "samples": max(args.persons, args.samples),
        "requests_per_case": args.requests,
        "populate_s": round(populate_s, 2),
        "lookup": timing,
        "report_month": {
            "samples_counted": report.total.samples,
            "build_s": round(build_s, 3),
            "csv_and_xlsx_s": round(files_s, 3),
            "csv_bytes": len(csv_bytes),
            "xlsx_bytes": len(xlsx_bytes),
        },
    }


def _postgres_db() -> tuple[str, str]:
    import psycopg

    name = f"swabline_bench_{uuid.uuid4().hex[:10]}"
    admin = POSTGRES_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{name}"


def _drop_postgres(name: str) -> None:
    import psycopg

    admin = POSTGRES_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_lookup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--persons", type=int, default=20_000, help="people with a result (20000)")
    p.add_argument("--samples", type=int, default=100_000, help="tubes in the month (100000)")
    p.add_argument("--requests", type=int, default=200, help="lookups per case (200)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    out = []
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            out.append(bench("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", args))
    if args.db in ("postgres", "both"):
        name, url = _postgres_db()
        try:
            out.append(bench("postgres", url, args))
        finally:
            _drop_postgres(name)
    for r in out:
        print(
            f"\n{r['db']}: {r['persons']} persons, {r['samples']} samples, "
            f"{r['requests_per_case']} lookups per case"
        )
        print(f"  {'case':<24}{'p50 ms':>9}{'p90 ms':>9}{'mean ms':>9}{'p50/known-wrong':>17}")
        for case, s in r["lookup"].items():
            ratio = s.get("p50_ratio_to_known_wrong_date", "")
            print(f"  {case:<24}{s['p50_ms']:>9}{s['p90_ms']:>9}{s['mean_ms']:>9}{ratio!s:>17}")
        m = r["report_month"]
        print(
            f"  month report: {m['samples_counted']} samples counted, built in "
            f"{m['build_s']} s; CSV+XLSX in {m['csv_and_xlsx_s']} s"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
