"""What sampling staff scan at a simulated station: queues, tubes, pools, people, undos.

Pure: a seeded ``random.Random`` in, a stream of ``Step``s out, each the scanned text and the
record it leads to, with ``data`` built from ``protocol.events`` models so it is valid by
construction. Identities are synthetic (random citizen-ID numbers, names from a short list).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from agent.ports import Entry
from protocol.events import (
    Mode,
    Person,
    PersonAdded,
    PoolClosed,
    Setting,
    SignIn,
    TestKind,
    TubeOpened,
    Undo,
)

_FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng"]
_MIDDLE = ["Văn", "Thị", "Hữu", "Minh", "Ngọc", "Đức", "Thanh", "Quốc"]
_GIVEN = ["An", "Bình", "Chi", "Dũng", "Giang", "Hùng", "Lan", "Mai", "Nam", "Thảo", "Tú", "Vy"]
_PLACES = ["Q.1, TP. Hồ Chí Minh", "Ba Đình, Hà Nội", "Ninh Kiều, Cần Thơ", "Hải Châu, Đà Nẵng"]

UNDO_CARD = "SWABLINE:CMD:UNDO"
CLOSE_CARD = "SWABLINE:CMD:CLOSE_POOL"


@dataclass(frozen=True, slots=True)
class StaffProfile:
    """How staff at one kind of site behave.

    Args:
        pool_sizes: pool sizes a station may be set to (one drawn per station).
        single_fraction: share of stations sampling one person per tube.
        undo_probability: chance that staff take back the person just added (wrong QR).
        queue_persons: (least, most) people in a queue that arrives at once.
        rapid_antigen_fraction: share of stations doing rapid antigen tests.
    """

    pool_sizes: tuple[int, ...] = (5, 10, 20)
    single_fraction: float = 0.1
    undo_probability: float = 0.02
    queue_persons: tuple[int, int] = (20, 200)
    rapid_antigen_fraction: float = 0.1


@dataclass(frozen=True, slots=True)
class Step:
    """One scan and the record it produces."""

    code: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class QueueEnd:
    """The queue is done: the station idles until the next one arrives."""


_Data = SignIn | Setting | TubeOpened | PersonAdded | PoolClosed | Undo


def _data(model: _Data) -> dict[str, object]:
    return model.model_dump(mode="json", exclude_none=True)


class Staff:
    """The staff of station number ``station_no``; ``steps()`` never ends.

    The driver calls ``stored(kind, seq)`` after each record is stored, so that an ``undo``
    names the ``seq`` of the ``person_added`` it takes back, as the real workflow does.
    """

    def __init__(self, station_no: int, rng: random.Random, profile: StaffProfile) -> None:
        self.station_no = station_no
        self._rng = rng
        self._profile = profile
        self.mode: Mode = "single" if rng.random() < profile.single_fraction else "pool"
        self.pool_size = 1 if self.mode == "single" else rng.choice(profile.pool_sizes)
        self.test_kind: TestKind = (
            "rapid_antigen" if rng.random() < profile.rapid_antigen_fraction else "rt_pcr"
        )
        self.staff_id = f"staff-{station_no:05d}-{rng.randrange(100):02d}"
        self._tubes = 0
        self._last_person_seq = 0

    def stored(self, kind: str, seq: int) -> None:
        if kind == "person_added":
            self._last_person_seq = seq

    def steps(self, *, first_queue_share: float = 1.0) -> Iterator[Step | QueueEnd]:
        """Scans forever, queue after queue; ``first_queue_share`` < 1 starts mid-queue."""
        rng = self._rng
        yield Step(
            f"STAFF:{self.staff_id}",
            Entry("sign_in", f"STAFF:{self.staff_id}", _data(SignIn(staff_id=self.staff_id))),
        )
        setting = Setting(test_kind=self.test_kind, pool_size=self.pool_size, mode=self.mode)
        yield Step("SWABLINE:CMD:SETTINGS", Entry("setting", None, _data(setting)))
        share = first_queue_share
        while True:
            persons = max(1, round(rng.randint(*self._profile.queue_persons) * share))
            share = 1.0
            while persons > 0:
                in_tube = min(self.pool_size, persons)
                yield from self._tube(in_tube, full=in_tube == self.pool_size)
                persons -= in_tube
            yield QueueEnd()

    def _tube(self, persons: int, *, full: bool) -> Iterator[Step]:
        self._tubes += 1
        tube = f"SIM{self.station_no:05d}-{self._tubes:06d}"
        opened = TubeOpened(
            tube=tube,
            mode=self.mode,
            pool_size=self.pool_size,
            test_kind=self.test_kind,
            staff_id=self.staff_id,
        )
        yield Step(tube, Entry("tube_opened", tube, _data(opened)))
        position = 1
        while position <= persons:
            qr, person = self.person()
            added = PersonAdded(tube=tube, person=person, position=position, staff_id=self.staff_id)
            yield Step(qr, Entry("person_added", qr, _data(added)))
            if self._rng.random() < self._profile.undo_probability:
                undo = Undo(tube=tube, undone_seq=self._last_person_seq, person_key=person.key)
                yield Step(UNDO_CARD, Entry("undo", None, _data(undo)))
                continue  # the right person is scanned at the same position
            position += 1
        reason: Literal["full", "card", "single"] = (
            "single" if self.mode == "single" else "full" if full else "card"
        )
        closed = PoolClosed(tube=tube, persons=persons, reason=reason)
        yield Step(CLOSE_CARD, Entry("pool_closed", None, _data(closed)))

    def person(self) -> tuple[str, Person]:
        """A synthetic person: the text of their QR code and what the workflow reads from it."""
        rng = self._rng
        year = rng.randint(1940, 2015)
        sex = rng.choice(("male", "female"))
        century_sex = (0 if year < 2000 else 2) + (1 if sex == "female" else 0)
        number = f"{rng.randint(1, 96):03d}{century_sex}{year % 100:02d}{rng.randrange(10**6):06d}"
        day, month = rng.randint(1, 28), rng.randint(1, 12)
        if rng.random() < 0.15:  # the health-declaration QR: masked number, QID as key
            qid = "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ23456789", k=10))
            name = f"{rng.choice(_FAMILY)} {rng.choice(_GIVEN)}"
            ascii_name = name.upper().encode("ascii", "ignore").decode()
            masked = "******" + number[-6:]
            qr = f"{masked}|{ascii_name}|{year}-**-**|0|{qid}|"
            return qr, Person(
                key_type="qid",
                key=qid,
                name=ascii_name,
                birth_date=f"{year}-**-**",
                document_number=masked,
                ext="",
            )
        name = f"{rng.choice(_FAMILY)} {rng.choice(_MIDDLE)} {rng.choice(_GIVEN)}"
        address = rng.choice(_PLACES)
        qr = (
            f"{number}||{name}|{day:02d}{month:02d}{year}|{'Nữ' if sex == 'female' else 'Nam'}|"
            f"{address}|01062021"
        )
        return qr, Person(
            key_type="cccd",
            key=number,
            name=name,
            birth_date=f"{year}-{month:02d}-{day:02d}",
            sex=sex,
            address=address,
            issue_date="2021-06-01",
        )
