"""The seq floor a station learns after its birth counts every seq the server heard of, and a
seq used twice (a reinstalled station numbering again) is kept, acknowledged once and
reported as missing, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from protocol import Record
from server.config import ServerConfig
from server.ingest import Message, Stored, classify, store_resilient
from server.models import RecordRow, RejectedMessage, StationRow
from server.ops.gaps import missing_ranges, suspected_missing
from server.ops.monitor import AlertNotifier, OpsMonitor
from tests.server.factories import message, record
from tests.server.ops_helpers import add_station, heartbeat, org_tree, status


def ingest(engine: Engine, *messages: Message) -> Stored:
    return store_resilient(engine, classify(list(messages)))


def scan(seq: int, code: str, rid_seq: int | None = None) -> Record:
    """A scan with seq ``seq``; ``rid_seq`` gives it another record's identity (the record
    a reinstalled station makes with a seq it had already used)."""
    r = record("st-1", rid_seq if rid_seq is not None else seq, "scan", code=code)
    return r.model_copy(update={"seq": seq})


def test_the_floor_is_the_highest_seq_stored_rejected_or_reported(engine: Engine) -> None:
    now = datetime.now(UTC)
    ingest(engine, *[message(scan(s, f"C{s}")) for s in (1, 2, 3)])
    # seq 7 was acknowledged but only kept as rejected (its data is invalid for its kind)
    bad = record("st-1", 7, "tube_opened", {"tube": "T-1"})
    stored = ingest(engine, message(bad))
    assert stored.acks == {"st-1": [bad.record_id]} and stored.invalid == 1
    assert ingest(engine, status("st-1", "online", 1)).syncs == {"st-1": 7}
    # the station said it had handed out up to 9 (8 and 9 still in its outbox)
    ingest(engine, heartbeat("st-1", now, last_seq=9))
    assert ingest(engine, status("st-1", "online", 2)).syncs == {"st-1": 9}
    # Reinstalled: the fresh install reports a low last_seq before it learns the floor, in the
    # same batch as its birth. The floor does not go back.
    stored = ingest(
        engine,
        heartbeat("st-1", now + timedelta(seconds=5), last_seq=0),
        status("st-1", "online", 0),
    )
    assert stored.syncs == {"st-1": 9}
    # Stored records above everything else win again.
    ingest(engine, message(scan(12, "C12")))
    assert ingest(engine, status("st-1", "online", 1)).syncs == {"st-1": 12}
    with Session(engine) as s:
        row = s.get(StationRow, "st-1")
        assert row is not None and (row.max_seq, row.seq_seen) == (12, 9)


def test_a_seq_collision_is_kept_once_acknowledged_and_reported_missing(engine: Engine) -> None:
    first = scan(5, "A")
    ingest(engine, *[message(scan(s, f"C{s}")) for s in (1, 2, 3, 4)], message(first))
    clash = scan(5, "B", rid_seq=105)  # same station, same seq, another record
    stored = ingest(engine, message(clash))
    assert stored.acks == {"st-1": [clash.record_id]}  # kept, so acknowledged
    assert (stored.inserted, stored.collisions, stored.rejected) == (0, 1, 1)
    again = ingest(engine, message(clash))  # the acknowledgement was lost: a resend
    assert again.acks == {"st-1": [clash.record_id]}
    assert (again.collisions, again.rejected, again.duplicates) == (0, 0, 1)
    with Session(engine) as s:
        kept = s.execute(select(RejectedMessage.record_id, RejectedMessage.collides_with)).all()
        assert kept == [(clash.record_id, first.record_id)]
        assert s.scalar(select(func.count()).select_from(RecordRow)) == 5
        # Its seq is not "accounted for": the gap report lists it and counts it.
        assert missing_ranges(s, "st-1") == ([(5, 5)], 1)
        assert suspected_missing(s) == {"st-1": 1}


def test_a_seq_collision_raises_the_sequence_gap_alert(engine: Engine) -> None:
    tree = org_tree(engine)
    add_station(engine, "st-1", tree.facility, "Bàn 1")
    now = datetime.now(UTC).replace(microsecond=0)
    config = ServerConfig()
    ingest(engine, *[message(scan(s, f"C{s}")) for s in (1, 2, 3)])
    ingest(engine, message(scan(2, "again", rid_seq=102)))
    ingest(engine, status("st-1", "online", 1), heartbeat("st-1", now))
    clock = [now]
    monitor = OpsMonitor(
        engine=engine,
        config=config,
        notify=AlertNotifier(enabled=True, clock=lambda: clock[0]),
        clock=lambda: clock[0],
    )
    monitor.evaluate()
    clock[0] = now + timedelta(seconds=config.alerts.thresholds.gap_grace_s + 1)
    ingest(engine, heartbeat("st-1", clock[0]))
    monitor._last_gap_check = 0
    opened = monitor.evaluate().opened
    assert [(a.station_id, a.kind, a.detail["missing"]) for a in opened] == [
        ("st-1", "sequence_gap", 1)
    ]
