"""Synthetic people and codes in the real formats (nobody real), and a driver that plays a
station's part for a workflow: numbering records and handing them back as ``stored``."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from agent.fakes import FakeClock
from agent.ports import Decision, Scan
from agent.session import SamplingWorkflow
from protocol import Record
from protocol.events import DATA_MODELS


def cccd_number(province: str, born: dt.date, female: bool, serial: int) -> str:
    """A 12-digit CCCD number consistent with birth year, century and sex."""
    digit = (born.year // 100 - 19) * 2 + (1 if female else 0)
    return f"{province}{digit}{born.year % 100:02d}{serial:06d}"


def cccd(
    serial: int = 1,
    *,
    name: str = "Nguyễn Thị Bình",
    born: dt.date = dt.date(2003, 8, 15),
    female: bool = True,
    province: str = "079",
    old_id: str = "",
    address: str = "12 Lê Lợi, P. Bến Nghé, Q.1, TP. Hồ Chí Minh",
    issued: dt.date = dt.date(2021, 4, 20),
    extra: tuple[str, ...] = (),
) -> str:
    """A CCCD QR text: seven '|'-separated fields, then any ``extra`` ones (newer cards)."""
    fields = [
        cccd_number(province, born, female, serial),
        old_id,
        name,
        born.strftime("%d%m%Y"),
        "Nữ" if female else "Nam",
        address,
        issued.strftime("%d%m%Y"),
        *extra,
    ]
    return "|".join(fields)


def health_qr(
    qid: str = "QX7K2M9P4T",
    *,
    document: str = "******001234",
    name: str = "NGUYEN THI BINH",
    born: str = "2003-**-**",
    kind: str = "0",
    ext: str = "",
) -> str:
    return f"{document}|{name}|{born}|{kind}|{qid}|{ext}"


PERSONS = [
    cccd(1),
    cccd(2, name="Trần Văn An", born=dt.date(1990, 1, 1), female=False, province="001"),
    cccd(3, name="Lê Thị Hồng", born=dt.date(1975, 12, 31), province="048", old_id="201234567"),
    cccd(4, name="Phạm Minh Đức", born=dt.date(2010, 2, 28), female=False, province="031"),
    cccd(5, name="Võ Thị Mai", born=dt.date(1958, 6, 1), province="092", extra=("x", "y")),
    health_qr("QID0000006"),
    health_qr("QID0000007", name="TRAN VAN AN", born="1990-01-01"),
    health_qr("", document="012345678901", name="LE VAN C", born="1980-05-**"),
]
"""Eight different people, in every accepted format."""


@dataclass
class Driver:
    """Stands in for the station: decisions become numbered records fed back to ``stored``."""

    workflow: SamplingWorkflow
    clock: FakeClock
    station_id: str = "st-1"
    records: list[Record] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def scan(self, text: str, *, lossy: bool = False, rejected: str | None = None) -> Decision:
        decision = self.workflow.decide(Scan(text, "test", rejected=rejected, lossy=lossy))
        return self.feed(decision)

    def feed(self, decision: Decision) -> Decision:
        """Store ``decision``'s entries as the station would, and tell the workflow."""
        stored = []
        for entry in decision.entries:
            model = DATA_MODELS[entry.kind]
            # the data must be valid under the contract, exactly as the server will read it
            assert model.model_validate(entry.data).model_dump(mode="json", exclude_none=True) == (
                entry.data
            )
            stored.append(
                Record(
                    record_id=str(uuid.uuid4()),
                    station_id=self.station_id,
                    seq=len(self.records) + len(stored) + 1,
                    boot_id="boot",
                    wall_time=self.clock.wall(),
                    mono_ns=self.clock.monotonic_ns(),
                    clock_synced=True,
                    kind=entry.kind,
                    code=entry.code,
                    data=dict(entry.data),
                )
            )
        self.workflow.stored(stored)
        self.records.extend(stored)
        self.decisions.append(decision)
        return decision

    def kinds(self, decision: Decision) -> list[str]:
        return [e.kind for e in decision.entries]
