"""Ingest tells a station where its sequence stands, and counts duplicates per station."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agent.identity import uuid7
from protocol import Record, Status, encode
from protocol.topics import StationTopic, topic
from server.db import make_engine, migrate
from server.ingest import Message, classify, store_batch
from server.models import RecordRow


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    migrate(e)
    yield e
    e.dispose()


def msg(station_id: str, kind: StationTopic, payload: bytes) -> Message:
    return Message(topic(station_id, kind), payload, datetime.now(UTC))


def rec(station_id: str, seq: int) -> Record:
    return Record(
        record_id=uuid7(),
        station_id=station_id,
        seq=seq,
        boot_id="b",
        wall_time=1.0,
        mono_ns=1,
        clock_synced=True,
        kind="scan",
        code=f"T{seq}",
    )


def birth(station_id: str, bd_seq: int) -> Message:
    status = Status(state="online", bd_seq=bd_seq, time=1.0)
    return msg(station_id, StationTopic.STATUS, encode(status))


def test_a_birth_is_answered_with_the_highest_seq_stored(engine: Engine) -> None:
    first = [rec("st-1", s) for s in (1, 2, 7)]
    stored = store_batch(
        engine, classify([msg("st-1", StationTopic.RECORDS, encode(r)) for r in first])
    )
    assert stored.syncs == {}
    # A reinstalled st-1 and a brand-new st-2 announce themselves; st-1 sends one more record.
    batch = [
        birth("st-1", 1),
        birth("st-2", 1),
        msg("st-1", StationTopic.RECORDS, encode(rec("st-1", 8))),
    ]
    stored = store_batch(engine, classify(batch))
    assert stored.syncs == {"st-1": 8, "st-2": 0}
    offline = Status(state="offline", bd_seq=1, time=2.0)
    stored = store_batch(engine, classify([msg("st-2", StationTopic.STATUS, encode(offline))]))
    assert stored.syncs == {}


def test_duplicates_are_counted_per_station_and_stored_once(engine: Engine) -> None:
    a, b = rec("st-1", 1), rec("st-2", 1)
    payloads = [msg(r.station_id, StationTopic.RECORDS, encode(r)) for r in (a, b)]
    store_batch(engine, classify(payloads))
    again = store_batch(engine, classify([*payloads, payloads[0]]))  # resent, twice for st-1
    assert again.inserted == 0
    assert again.duplicates == 3
    assert again.duplicates_by_station == {"st-1": 2, "st-2": 1}
    assert set(again.acks) == {"st-1", "st-2"}  # acknowledged again all the same
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(RecordRow)) == 2
