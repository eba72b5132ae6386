"""Ingest on SQLite and PostgreSQL: exactly once, bad input kept, stale deaths ignored."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agent.identity import uuid7
from protocol import Record, Status, encode
from protocol.topics import StationTopic, topic
from server.ingest import Message, classify, store_batch
from server.models import RecordRow, RejectedMessage, StationRow

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def rec(station: str, seq: int, code: str = "T") -> Record:
    return Record(
        record_id=uuid7(),
        station_id=station,
        seq=seq,
        boot_id="b",
        wall_time=1.0,
        mono_ns=1,
        clock_synced=False,
        kind="scan",
        code=f"{code}-{seq}",
    )


def msg(station: str, kind: StationTopic, payload: bytes) -> Message:
    return Message(topic(station, kind), payload, NOW)


def test_records_are_stored_once_and_every_copy_is_acknowledged(engine: Engine) -> None:
    a, b = rec("st-1", 1), rec("st-1", 2)
    first = store_batch(engine, classify([msg("st-1", StationTopic.RECORDS, encode(a))]))
    assert first.acks == {"st-1": [a.record_id]} and first.inserted == 1
    # b, plus a resent twice (once inside the same batch)
    again = [msg("st-1", StationTopic.RECORDS, encode(r)) for r in (a, b, a)]
    second = store_batch(engine, classify(again))
    assert sorted(second.acks["st-1"]) == sorted([a.record_id, b.record_id])
    assert (second.inserted, second.duplicates) == (1, 2)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(RecordRow)) == 2
        assert s.get(StationRow, "st-1").max_seq == 2  # type: ignore[union-attr]


def test_a_forged_station_id_is_rejected_and_kept(engine: Engine) -> None:
    forged = rec("st-2", 1)
    stored = store_batch(engine, classify([msg("st-1", StationTopic.RECORDS, encode(forged))]))
    assert stored.acks == {} and stored.rejected == 1
    with Session(engine) as s:
        row = s.scalars(select(RejectedMessage)).one()
        assert row.station_id == "st-1" and "does not match" in row.reason
        assert row.payload == encode(forged)
        assert s.scalar(select(func.count()).select_from(RecordRow)) == 0


def test_a_reused_sequence_number_is_kept_as_rejected_not_lost(engine: Engine) -> None:
    first, clash = rec("st-1", 5, "A"), rec("st-1", 5, "B")
    store_batch(engine, classify([msg("st-1", StationTopic.RECORDS, encode(first))]))
    stored = store_batch(engine, classify([msg("st-1", StationTopic.RECORDS, encode(clash))]))
    assert stored.acks == {"st-1": [clash.record_id]}  # acknowledged: it is kept, not lost
    with Session(engine) as s:
        kept = s.scalars(select(RejectedMessage)).one()
        assert "seq 5 already used" in kept.reason
        assert json.loads(kept.payload)["code"] == "B-5"


def test_a_stale_death_never_overwrites_a_newer_birth(engine: Engine) -> None:

    def status(state: str, bd_seq: int) -> Message:
        return msg("st-1", StationTopic.STATUS, encode(Status(state=state, bd_seq=bd_seq, time=1)))  # type: ignore[arg-type]

    def state() -> tuple[str, int]:
        with Session(engine) as s:
            row = s.get(StationRow, "st-1")
            assert row is not None
            return row.state, row.bd_seq

    store_batch(engine, classify([status("online", 1)]))
    assert state() == ("online", 1)
    store_batch(engine, classify([status("online", 2), status("offline", 1)]))  # late will
    assert state() == ("online", 2)
    store_batch(engine, classify([status("offline", 2)]))
    assert state() == ("offline", 2)


def test_garbage_never_raises(engine: Engine) -> None:
    batch = classify(
        [
            Message("not/ours", b"{}", NOW),
            msg("st-1", StationTopic.RECORDS, b"\xff\xfe"),
            msg("st-1", StationTopic.STATUS, b"{}"),
            msg("st-1", StationTopic.HEARTBEAT, b"null"),
            msg("st-1", StationTopic.ACKS, b"{}"),
            msg("st-1", StationTopic.RECORDS, encode(rec("st-1", 1))),
        ]
    )
    stored = store_batch(engine, batch)
    assert stored.rejected == 5 and stored.inserted == 1


def test_the_event_log_keeps_each_payload_byte_for_byte(engine: Engine) -> None:
    r = rec("st-1", 1)
    # Valid but not how the server would write it: key order, spacing, an escape.
    data = {"staff_id": "NV-1", "staff_name": "Nguyễn"}
    fields = {**json.loads(encode(r)), "kind": "sign_in", "data": data}
    payload = (
        "{ " + ",  ".join(f'"{k}" : {json.dumps(v)}' for k, v in reversed(fields.items())) + " }"
    ).encode()
    assert b"\\u1ec5" in payload
    stored = store_batch(engine, classify([msg("st-1", StationTopic.RECORDS, payload)]))
    assert stored.inserted == 1
    with Session(engine) as s:
        row = s.get(RecordRow, r.record_id)
        assert row is not None
        assert row.payload == payload
        assert row.data == data
        assert (row.seq, row.code, row.kind) == (1, "T-1", "sign_in")
