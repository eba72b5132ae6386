"""A small province for lab and results tests: organisations, registered stations, users with
roles, and samples that arrive the way they do in production (station records through ingest).

    Tỉnh Kiên Giang (province)
    ├── Rạch Giá (district):  KG-RG-S1 sampling (station st-1), KG-RG-LAB lab (station lab-1)
    └── Phú Quốc (district):  KG-PQ-S2 sampling (station st-2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from protocol import Record
from server.access import Grant, Principal
from server.ingest import classify, store_resilient
from server.models import Organisation, Role, StationRow, Tube, User
from tests.server.factories import message, record

T0 = 1_795_000_000.0  # 2026-11-18 (a Wednesday) 09:46:40 UTC


@dataclass
class World:
    engine: Engine
    province: int
    rach_gia: int
    phu_quoc: int
    s1: int
    s2: int
    lab: int
    paths: dict[int, str]
    users: dict[str, int]
    seqs: dict[str, int]

    def principal(self, username: str, role: Role, org: int) -> Principal:
        return Principal(
            user_id=self.users[username],
            username=username,
            grants=(Grant(role, org, self.paths[org], org == self.province),),
        )

    @property
    def lab_staff(self) -> Principal:
        return self.principal("lab1", Role.LAB_STAFF, self.lab)

    @property
    def admin(self) -> Principal:
        return self.principal("admin", Role.PROVINCIAL_ADMIN, self.province)

    def ingest(self, records: Sequence[Record]) -> Any:
        return store_resilient(self.engine, classify([message(r) for r in records]))

    def next_seq(self, station_id: str) -> int:
        self.seqs[station_id] = self.seqs.get(station_id, 0) + 1
        return self.seqs[station_id]

    def sample(
        self,
        station_id: str,
        tube: str,
        people: Sequence[tuple[str, str, str]],
        *,
        at: float = T0,
        mode: str = "pool",
        test_kind: str = "rt_pcr",
    ) -> None:
        """A tube opened, ``people`` (CCCD, name, DDMMYYYY birth date) added, closed at ``at``."""
        records = [
            self._rec(
                station_id,
                "tube_opened",
                {"tube": tube, "mode": mode, "pool_size": 10, "test_kind": test_kind},
                at - 60,
                code=tube,
            )
        ]
        for i, (cccd, name, dob) in enumerate(people, 1):
            iso = f"{dob[4:]}-{dob[2:4]}-{dob[:2]}"
            records.append(
                self._rec(
                    station_id,
                    "person_added",
                    {
                        "tube": tube,
                        "person": {
                            "key_type": "cccd",
                            "key": cccd,
                            "name": name,
                            "birth_date": iso,
                        },
                        "position": i,
                    },
                    at - 60 + i,
                    code=f"{cccd}||{name}|{dob}|Nam|addr|01012021",
                )
            )
        reason = "single" if mode == "single" else "card"
        records.append(
            self._rec(
                station_id,
                "pool_closed",
                {"tube": tube, "persons": len(people), "reason": reason},
                at,
            )
        )
        self.ingest(records)

    def lab_scan(self, tube: str, *, batch: str | None = None, at: float = T0 + 3600) -> Record:
        data: dict[str, Any] = {"tube": tube}
        if batch is not None:
            data["batch"] = batch
        r = self._rec("lab-1", "tube_received", data, at, code=tube)
        self.ingest([r])
        return r

    def _rec(
        self, station_id: str, kind: str, data: dict[str, Any], at: float, code: str | None = None
    ) -> Record:
        seq = self.next_seq(station_id)
        base = record(station_id, seq, kind, data, code=code)
        return base.model_copy(update={"wall_time": at})

    def tube(self, code: str) -> Tube:
        with Session(self.engine) as s:
            tube = s.scalars(select(Tube).where(Tube.code == code)).one()
            s.expunge(tube)
            return tube


def build_world(engine: Engine) -> World:
    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():

        def org(
            code: str, name: str, kind: str, parent: Organisation | None, fk: str | None = None
        ) -> Organisation:
            o = Organisation(
                code=code,
                name=name,
                kind=kind,
                facility_kind=fk,
                parent_id=parent.id if parent else None,
                path="",
                active=True,
            )
            s.add(o)
            s.flush()
            o.path = f"{parent.path if parent else '/'}{o.id}/"
            return o

        kg = org("KG", "Tỉnh Kiên Giang", "province", None)
        rg = org("KG-RG", "Thành phố Rạch Giá", "district", kg)
        pq = org("KG-PQ", "Thành phố Phú Quốc", "district", kg)
        s1 = org("KG-RG-S1", "Trạm y tế phường Vĩnh Thanh", "facility", rg, "sampling")
        lab = org("KG-RG-LAB", "CDC Kiên Giang - Khoa xét nghiệm", "facility", rg, "lab")
        s2 = org("KG-PQ-S2", "Trạm y tế Dương Đông", "facility", pq, "sampling")
        for sid, fac in (("st-1", s1), ("st-2", s2), ("lab-1", lab)):
            s.add(
                StationRow(
                    station_id=sid,
                    state="online",
                    bd_seq=0,
                    max_seq=0,
                    facility_id=fac.id,
                    name=sid,
                    active=True,
                    record_count=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        users = {}
        for name in ("admin", "lab1", "manager2"):
            u = User(username=name, display_name=name.title(), password_hash="x", locale="vi")
            s.add(u)
            s.flush()
            users[name] = u.id
        paths = {o.id: o.path for o in (kg, rg, pq, s1, lab, s2)}
        ids = (kg.id, rg.id, pq.id, s1.id, s2.id, lab.id)
    return World(engine, *ids, paths=paths, users=users, seqs={})


PEOPLE = [
    ("079303001234", "Nguyễn Thị Bình", "15082003"),
    ("001090012345", "Trần Văn An", "01011990"),
    ("091085000111", "Lê Hoàng Cường", "30041985"),
]
