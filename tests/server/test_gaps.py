"""Sequence gaps per station: the rule, the database query, the API and the dashboard."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from server.db import make_engine, migrate
from server.gaps import Gap, find_gaps, gap_summary, station_gaps
from server.models import RecordRow, StationRow


def test_find_gaps() -> None:
    assert find_gaps([]) == []
    assert find_gaps([1, 2, 3]) == []
    assert find_gaps([3, 1, 2, 2]) == []
    assert find_gaps([2, 3]) == [Gap(1, 1)]
    assert find_gaps([1, 2, 5, 6, 9]) == [Gap(3, 4), Gap(7, 8)]
    assert Gap(3, 4).missing == 2


@given(st.sets(st.integers(1, 300)))
def test_gaps_and_stored_seqs_tile_one_to_the_highest(seqs: set[int]) -> None:
    gaps = find_gaps(seqs)
    missing = {s for g in gaps for s in range(g.first, g.last + 1)}
    assert missing.isdisjoint(seqs)
    assert missing | seqs == set(range(1, max(seqs, default=0) + 1))
    assert all(a.last + 1 < b.first for a, b in itertools.pairwise(gaps))


def store(engine: Engine, station_id: str, seqs: list[int]) -> None:
    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():
        s.add(StationRow(station_id=station_id, state="online", bd_seq=1, max_seq=max(seqs)))
        s.execute(
            insert(RecordRow),
            [
                {
                    "record_id": f"{station_id:0>8}-0000-7000-8000-{seq:012d}"[-36:],
                    "station_id": station_id,
                    "seq": seq,
                    "boot_id": "b",
                    "wall_time": 1.0,
                    "mono_ns": 1,
                    "clock_synced": True,
                    "kind": "scan",
                    "code": None,
                    "payload": b"{}",
                    "received_at": now,
                }
                for seq in seqs
            ],
        )


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    migrate(e)
    yield e
    e.dispose()


def test_the_database_finds_the_same_gaps_as_the_rule(engine: Engine) -> None:
    rng = random.Random(7)
    stations = {
        "st-1": list(range(1, 501)),  # complete
        "st-2": sorted(rng.sample(range(1, 2000), 900)),
        "st-3": [5, 6, 7, 100],  # the start is missing too
    }
    for sid, seqs in stations.items():
        store(engine, sid, seqs)
    with Session(engine) as s:
        for sid, seqs in stations.items():
            assert station_gaps(s, sid) == find_gaps(seqs)
        summary = gap_summary(s)
    assert "st-1" not in summary
    for sid in ("st-2", "st-3"):
        expected = find_gaps(stations[sid])
        assert summary[sid].gaps == len(expected)
        assert summary[sid].missing == sum(g.missing for g in expected)
