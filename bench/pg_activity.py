"""What PostgreSQL is busy with during a benchmark: samples ``pg_stat_activity`` and counts the
statements found running, so the ones that take the time stand out.

    python -m bench.pg_activity --until-file /tmp/done --out bench/results/pg-activity.json &
    python -m bench storm ; touch /tmp/done

Every ``--interval-s`` (0.5 s) it lists the active backends of the databases whose names start
with ``--database-prefix`` (``swabline_bench_``, the benchmarks' fresh databases) and counts each
statement (its first 160 characters, numbers and lists of placeholders folded) with its wait
event. A statement seen in a share of the samples was running that share of the time; the
sampling costs one short query per interval. Needs the ``psycopg`` driver (``.[postgres]``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg

QUERY = """
SELECT datname, coalesce(wait_event_type || ':' || wait_event, 'cpu'), query
FROM pg_stat_activity
WHERE state = 'active' AND datname LIKE %s AND pid <> pg_backend_pid()
"""


def fold(query: str) -> str:
    """A statement with its literals and repeated placeholders folded, so repeats count as one."""
    q = " ".join(query.split())
    q = re.sub(r"\$\d+(\s*,\s*\$\d+)+", "$n...", q)
    q = re.sub(r"(\(\$n\.\.\.\)|\(\$\d+\))(\s*,\s*(\(\$n\.\.\.\)|\(\$\d+\)))+", "(...)...", q)
    q = re.sub(r"\b\d+\b", "N", q)
    return q[:160]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pg_activity", description=__doc__)
    p.add_argument("--dsn", default="host=127.0.0.1 user=postgres dbname=postgres")
    p.add_argument("--database-prefix", default="swabline_bench_")
    p.add_argument("--interval-s", type=float, default=0.5)
    p.add_argument("--until-file", type=Path, help="stop when this file exists")
    p.add_argument("--duration-s", type=float, default=None, help="or stop after this long")
    p.add_argument("--out", type=Path, required=True, help="JSON with the counts")
    args = p.parse_args(argv)
    counts: Counter[tuple[str, str]] = Counter()
    samples = busy = 0
    started = time.monotonic()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        while True:
            if args.until_file is not None and args.until_file.exists():
                break
            if args.duration_s is not None and time.monotonic() - started > args.duration_s:
                break
            rows = conn.execute(QUERY, [args.database_prefix + "%"]).fetchall()
            samples += 1
            busy += bool(rows)
            for _db, wait, query in rows:
                counts[(fold(query), wait)] += 1
            time.sleep(args.interval_s)
    top = [
        {"share_of_samples": round(n / max(samples, 1), 4), "wait": wait, "statement": stmt}
        for (stmt, wait), n in counts.most_common(25)
    ]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "interval_s": args.interval_s,
        "samples": samples,
        "samples_with_an_active_statement": busy,
        "top": top,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for t in top[:12]:
        print(f"{t['share_of_samples']:7.1%}  {t['wait']:<24} {t['statement']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
