"""Migration 0008 keeps what is stored: records get a payload built from their columns, the
seq floor and known collisions are filled in, and a downgrade gives ``data`` back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text

from server.db import alembic_config, make_engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def to(engine: Engine, revision: str, *, down: bool = False) -> None:
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


RID = "0192f000-0000-7000-8000-000000000005"
CLASH = "0192f000-0000-7000-8000-000000000105"


def test_0008_rebuilds_payloads_and_the_seq_floor_and_downgrades(engine: Engine) -> None:
    to(engine, "0007")
    data = {"tube": "T-1", "person": {"key": "079303001234", "name": "Nguyễn Thị Bình"}}
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO stations (station_id, state, bd_seq, max_seq, record_count, active, "
                "heartbeat) VALUES ('st-1', 'online', 1, 5, 1, true, :hb), "
                "('st-2', 'online', 1, 0, 0, true, NULL)"
            ),
            {"hb": json.dumps({"time": 1.0, "last_seq": 9})},
        )
        c.execute(
            text(
                "INSERT INTO records (record_id, station_id, seq, boot_id, wall_time, mono_ns, "
                "clock_synced, kind, code, data, received_at) VALUES (:rid, 'st-1', 5, 'b', 1.5, "
                "7, true, 'person_added', 'QR', :data, CURRENT_TIMESTAMP)"
            ),
            {"rid": RID, "data": json.dumps(data)},
        )
        c.execute(
            text(
                "INSERT INTO rejected_messages (received_at, topic, station_id, reason, size, "
                "payload, record_id, seq) VALUES (CURRENT_TIMESTAMP, 't', :sid, :reason, 2, "
                ":p, :rid, :seq)"
            ),
            [
                {
                    "sid": "st-1",
                    "reason": "seq 5 already used by another record",
                    "p": b"{}",
                    "rid": CLASH,
                    "seq": 5,
                },
                {
                    "sid": "st-2",
                    "reason": "unknown kind",
                    "p": b"{}",
                    "rid": CLASH[:-1] + "6",
                    "seq": 11,
                },
            ],
        )
    to(engine, "0008")
    with engine.connect() as c:
        payload = c.execute(text("SELECT payload FROM records")).scalar_one()
        rebuilt = json.loads(bytes(payload))
        assert rebuilt["data"] == data
        assert {k: rebuilt[k] for k in ("v", "record_id", "seq", "clock_synced", "code")} == {
            "v": 1,
            "record_id": RID,
            "seq": 5,
            "clock_synced": True,
            "code": "QR",
        }
        assert dict(c.execute(text("SELECT station_id, seq_seen FROM stations")).all()) == {
            "st-1": 9,
            "st-2": 11,
        }
        assert c.execute(
            text("SELECT collides_with FROM rejected_messages ORDER BY seq")
        ).scalars().all() == [RID, None]
    to(engine, "0007", down=True)
    with engine.connect() as c:
        back = c.execute(text("SELECT data FROM records")).scalar_one()
        assert (json.loads(back) if isinstance(back, str) else back) == data
