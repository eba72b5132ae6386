"""bench.pg_activity: the statement that keeps PostgreSQL busy is the one it reports."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from bench.pg_activity import fold, main


def test_literals_and_placeholder_lists_fold_so_repeats_count_as_one() -> None:
    a = fold("SELECT x FROM t WHERE id IN ($1, $2, $3) AND n = 42")
    b = fold("SELECT x FROM t\n WHERE id IN ($1, $2) AND n = 7")
    assert a == b == "SELECT x FROM t WHERE id IN ($n...) AND n = N"
    rows = fold("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT DO NOTHING")
    assert rows == "INSERT INTO t (a, b) VALUES (...)... ON CONFLICT DO NOTHING"


@pytest.mark.postgres
def test_a_long_statement_in_a_benchmark_database_is_counted(
    postgres_url: str, tmp_path: Path
) -> None:
    import psycopg

    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    started = threading.Event()

    def busy() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            started.set()
            conn.execute("SELECT pg_sleep(2.0), 12345")

    worker = threading.Thread(target=busy)
    worker.start()
    started.wait(10)
    out = tmp_path / "pg.json"
    try:
        main(
            [
                "--dsn",
                admin,
                "--database-prefix",
                name,
                "--interval-s",
                "0.1",
                "--duration-s",
                "1.0",
                "--out",
                str(out),
            ]
        )
    finally:
        worker.join()
    result = json.loads(out.read_text())
    assert result["samples"] >= 5
    top = result["top"][0]
    assert top["statement"] == "SELECT pg_sleep(N.N), N"
    assert top["wait"] == "Timeout:PgSleep" and top["share_of_samples"] > 0.5
