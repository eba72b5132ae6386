"""PostgreSQL keeps using the indexes after the tables grew, even where it never analyses them.

An ingest worker holds its connection for the whole campaign and runs the same few statements
on it, so the driver prepares them on the server. PostgreSQL then kept a generic plan made
while the tables were nearly empty (a sequential scan) until something analysed the table,
which never happens with autovacuum off: every batch read the whole ``tubes`` table. The
server now has each execution planned for the tables as they are (``server.db``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from protocol import Record
from server.db import make_engine, migrate
from server.ingest import classify, store_batch
from tests.server.factories import message, person, record

pytestmark = pytest.mark.postgres

STATION = "st-1"


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    migrate(engine)
    with engine.begin() as conn:  # as on a PostgreSQL with autovacuum off
        for table in ("tubes", "persons", "pool_members"):
            conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    yield engine
    engine.dispose()


def opened(seq: int, tube: str) -> Record:
    data = {"tube": tube, "mode": "pool", "pool_size": 10, "test_kind": "rt_pcr"}
    return record(STATION, seq, "tube_opened", data, code=tube)


def added(seq: int, tube: str) -> Record:
    data = {"tube": tube, "person": person(f"{seq:012d}"), "position": 1}
    return record(STATION, seq, "person_added", data, code=f"{seq:012d}||x|01011990|Nam|a|01012021")


def store(engine: Engine, records: list[Record]) -> None:
    stored = store_batch(engine, classify([message(r) for r in records]))
    assert stored.inserted == len(records)


def tube_reads(engine: Engine) -> tuple[int, int]:
    """(rows read by sequential scans, index scans) of ``tubes`` so far, the ingest's included.

    The ingest's connection (the pool's only one) publishes its counters when it next goes idle
    after ``pg_stat_force_next_flush``."""
    assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        conn.commit()
        row = conn.exec_driver_sql(
            "SELECT seq_tup_read, idx_scan FROM pg_stat_user_tables WHERE relname = 'tubes'"
        ).one()
        conn.commit()
    return int(row[0]), int(row[1] or 0)


def test_a_batch_on_a_grown_tubes_table_reads_it_by_its_index(pg: Engine) -> None:
    seq = 0
    # A campaign's first minutes: small batches, each adding a person to a tube opened earlier.
    for n in range(1, 16):
        store(pg, [opened(seq + 1, f"T-{n:06d}"), added(seq + 2, f"T-{n - 1:06d}")])
        seq += 2
    # The table grows to 20,000 tubes, not analysed since.
    for first in range(16, 20_016, 4000):
        store(pg, [opened(seq + 1 + i, f"T-{first + i:06d}") for i in range(4000)])
        seq += 4000
    before = tube_reads(pg)
    # Persons added to 50 of those tubes: the batch looks them up by code.
    store(pg, [added(seq + 1 + i, f"T-{16 + i * 397:06d}") for i in range(50)])
    after = tube_reads(pg)
    assert after[1] > before[1], "the batch's counters were not published"
    assert after[0] - before[0] == 0, "the batch read tubes by scanning the whole table"
