"""Records and messages as stations send them, for server tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from protocol import Record, encode
from protocol.topics import StationTopic, topic
from server.ingest import Message

T0 = 1_790_000_000.0


def record_id(station_id: str, seq: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{station_id}/{seq}"))


def record(
    station_id: str,
    seq: int,
    kind: str,
    data: dict[str, Any] | None = None,
    code: str | None = None,
) -> Record:
    return Record(
        record_id=record_id(station_id, seq),
        station_id=station_id,
        seq=seq,
        boot_id="boot-1",
        wall_time=T0 + seq,
        mono_ns=seq * 1_000_000,
        clock_synced=True,
        kind=kind,
        code=code,
        data=data or {},
    )


def message(r: Record) -> Message:
    return Message(topic(r.station_id, StationTopic.RECORDS), encode(r), datetime.now(UTC))


def raw(station_id: str, payload: dict[str, Any] | bytes, kind: str = "records") -> Message:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Message(topic(station_id, StationTopic(kind)), body, datetime.now(UTC))


def person(key: str, name: str | None = "Nguyễn Thị Bình", **extra: Any) -> dict[str, Any]:
    return {"key_type": "cccd", "key": key, "name": name, **extra}


def pool_session(
    station_id: str, tube: str, keys: list[str], *, start: int = 1, undo: int | None = None
) -> list[Record]:
    """A tube opened, persons added (one maybe undone), the pool closed."""
    seq = start
    out = [
        record(
            station_id,
            seq,
            "tube_opened",
            {"tube": tube, "mode": "pool", "pool_size": 10, "test_kind": "rt_pcr"},
            code=tube,
        )
    ]
    added: dict[int, tuple[int, str]] = {}
    for i, key in enumerate(keys, 1):
        seq += 1
        out.append(
            record(
                station_id,
                seq,
                "person_added",
                {"tube": tube, "person": person(key), "position": i},
                code=f"{key}||x|01011990|Nam|addr|01012021",
            )
        )
        added[i] = (seq, key)
    kept = len(keys)
    if undo is not None:
        seq += 1
        undone_seq, key = added[undo]
        out.append(
            record(
                station_id,
                seq,
                "undo",
                {"tube": tube, "undone_seq": undone_seq, "person_key": key},
            )
        )
        kept -= 1
    seq += 1
    out.append(
        record(station_id, seq, "pool_closed", {"tube": tube, "persons": kept, "reason": "card"})
    )
    return out
