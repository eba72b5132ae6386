"""Building blocks for the ops tests: an organisation tree, stations, heartbeats, births."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from protocol import CommandResult, Heartbeat, Status, encode
from protocol.topics import StationTopic, topic
from server.access import Grant, Principal
from server.ingest import Message, classify, store_resilient
from server.models import Organisation, Role, StationRow, User


@dataclass(frozen=True)
class Tree:
    province: int
    district: int
    facility: int
    other_facility: int


def org_tree(engine: Engine) -> Tree:
    """Province HCM > district Q1 > facilities F1 and F2 (F2 in district Q3)."""
    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():

        def add(kind: str, code: str, name: str, parent: Organisation | None) -> Organisation:
            org = Organisation(
                parent_id=parent.id if parent else None,
                kind=kind,
                facility_kind="sampling" if kind == "facility" else None,
                code=code,
                name=name,
                path="",
                active=True,
                created_at=now,
                updated_at=now,
            )
            s.add(org)
            s.flush()
            org.path = f"{parent.path if parent else '/'}{org.id}/"
            return org

        province = add("province", "HCM", "TP. Hồ Chí Minh", None)
        q1 = add("district", "HCM-Q1", "Quận 1", province)
        q3 = add("district", "HCM-Q3", "Quận 3", province)
        f1 = add("facility", "HCM-Q1-BN", "Trạm y tế Bến Nghé", q1)
        f2 = add("facility", "HCM-Q3-VTS", "Trạm y tế Võ Thị Sáu", q3)
        return Tree(province.id, q1.id, f1.id, f2.id)


def add_station(engine: Engine, station_id: str, facility_id: int | None, name: str = "") -> None:
    with Session(engine) as s, s.begin():
        s.add(
            StationRow(
                station_id=station_id,
                state="unknown",
                bd_seq=-1,
                max_seq=0,
                record_count=0,
                facility_id=facility_id,
                name=name or station_id,
                active=True,
            )
        )


def user(engine: Engine, username: str) -> int:
    with Session(engine) as s, s.begin():
        u = User(username=username, display_name=username, password_hash="x", locale="vi")
        s.add(u)
        s.flush()
        return u.id


def principal(engine: Engine, role: Role, org_id: int, username: str = "ops1") -> Principal:
    with Session(engine) as s:
        org = s.get(Organisation, org_id)
        assert org is not None
        path, root = org.path, org.parent_id is None
    return Principal(
        user_id=user(engine, username),
        username=username,
        grants=(Grant(role, org_id, path, root),),
    )


def heartbeat(station_id: str, at: datetime, **fields: Any) -> Message:
    hb: dict[str, Any] = {
        "time": at.timestamp(),
        "uptime_s": 100.0,
        "outbox_depth": 0,
        "heartbeat_s": 10.0,
        "clock_synced": True,
        "disk_free_mb": 10_000.0,
        "cpu_temp_c": 50.0,
        "scanners_connected": 1,
        "scanners_expected": 1,
    }
    hb.update(fields)
    return Message(topic(station_id, StationTopic.HEARTBEAT), encode(Heartbeat(**hb)), at)


def status(station_id: str, state: str, bd_seq: int, at: datetime | None = None) -> Message:
    when = at or datetime.now(UTC)
    payload = Status(state=state, bd_seq=bd_seq, time=when.timestamp())  # type: ignore[arg-type]
    return Message(topic(station_id, StationTopic.STATUS), encode(payload), when)


def answer(station_id: str, command_id: str, ok: bool = True, **detail: Any) -> Message:
    result = CommandResult(command_id=command_id, ok=ok, detail=detail)
    return Message(
        topic(station_id, StationTopic.COMMAND_RESULTS), encode(result), datetime.now(UTC)
    )


def ingest(engine: Engine, *messages: Message) -> None:
    store_resilient(engine, classify(list(messages)))
