"""Lab batches: packing a transport box at the sampling site, shipping it, receiving it at the
lab tube by tube, and closing the reception with missing and unexpected tubes flagged.

Used by the web pages (a keyboard-mode scanner typing into a field) and by ingest, for
``tube_received`` records from lab stations. Every step writes the sample lifecycle
(``shipped``, ``received_at_lab``) through ``server.samples``. Every write made for a person
(``actor``) is in the audit log with its before and after; a lab station's records are their own
trail.

A box label is reused box after box, so a code names at most one batch that is not closed.
A lab may receive a box nobody packed in Swabline (the samples came before the list): it gets
a batch without a manifest, in which no tube is unexpected.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from protocol import Record
from protocol.events import TubeReceived
from server.access import Principal
from server.audit import audit, snapshot
from server.errors import BadRequestError, ConflictError, NotFoundError
from server.models import (
    BatchStatus,
    LabBatch,
    LabBatchTube,
    Organisation,
    SampleEvent,
    SampleStage,
    Tube,
)
from server.samples import record_event

MAX_CODE = 64


class ScanOutcome(enum.StrEnum):
    """What one scanned tube came to, shown to the person scanning."""

    PACKED = "packed"
    ALREADY_PACKED = "already_packed"
    RECEIVED = "received"
    UNEXPECTED = "unexpected"
    """Received, but not on the box's manifest."""
    ALREADY_RECEIVED = "already_received"
    UNKNOWN_TUBE = "unknown_tube"
    """Received; the server has no station data for it yet."""


@dataclass
class TubeLine:
    code: str
    expected: bool
    received_at: datetime | None
    known: bool
    """The server has the sampling station's records for this tube."""


@dataclass
class BatchView:
    batch: LabBatch
    lines: list[TubeLine] = field(default_factory=list)
    origin: Organisation | None = None
    lab: Organisation | None = None

    @property
    def has_manifest(self) -> bool:
        return any(line.expected for line in self.lines)

    def flag(self, line: TubeLine) -> str:
        """``received``, ``pending``, ``missing`` (closed, never received) or ``unexpected``."""
        if line.received_at is None:
            return "missing" if self.batch.status == BatchStatus.CLOSED else "pending"
        if line.expected or not self.has_manifest:
            return "received"
        return "unexpected"

    def count(self, flag: str) -> int:
        return sum(1 for line in self.lines if self.flag(line) == flag)


def _audit(
    session: Session,
    actor: Principal | None,
    remote_addr: str | None,
    action: str,
    batch: LabBatch,
    *,
    tube: str | None = None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    """An audit entry for a person's write: on the batch, or on one tube of it."""
    if actor is None:
        return
    audit(
        session,
        actor,
        action,
        object_type="tube" if tube is not None else "lab_batch",
        object_id=tube if tube is not None else batch.id,
        organisation_id=batch.lab_id or batch.origin_id,
        before=before,
        after=after,
        remote_addr=remote_addr,
    )


def _tube_state(tube: Tube, line: LabBatchTube | None) -> dict[str, Any]:
    return {"status": tube.status, "lab_id": tube.lab_id, "batch_line": snapshot(line)}


_CODE_TEXTS = {"box code": "lab.err.bad_box_code", "tube code": "lab.err.bad_tube_code"}


def clean_code(code: str, what: str = "code") -> str:
    code = code.strip()
    if not code or len(code) > MAX_CODE or not code.isprintable():
        raise BadRequestError(
            f"not a valid {what}: printable, 1 to {MAX_CODE} characters",
            text=_CODE_TEXTS.get(what, "lab.err.bad_code"),
            values={"max": MAX_CODE},
        )
    return code


def open_batch(session: Session, code: str) -> LabBatch | None:
    """The batch with box label ``code`` that is not closed, if any."""
    return session.scalars(
        select(LabBatch)
        .where(LabBatch.code == code, LabBatch.status != BatchStatus.CLOSED.value)
        .order_by(LabBatch.id.desc())
    ).first()


def ensure_tube(session: Session, code: str, now: datetime) -> tuple[Tube, bool]:
    """The tube with ``code``, created as a stub if unknown; and whether station data exists."""
    tube = session.scalars(select(Tube).where(Tube.code == code)).first()
    if tube is None:
        tube = Tube(code=code, status=SampleStage.OPEN.value, open_count=0, created_at=now)
        tube.updated_at = now
        session.add(tube)
        session.flush()
    return tube, tube.opened_record_id is not None


# --- packing at the sampling site -------------------------------------------------------------


def start_packing(
    session: Session,
    *,
    code: str,
    origin_id: int,
    actor: Principal | None = None,
    remote_addr: str | None = None,
) -> LabBatch:
    code = clean_code(code, "box code")
    existing = open_batch(session, code)
    if existing is not None:
        if existing.status == BatchStatus.PACKING and existing.origin_id == origin_id:
            return existing
        raise ConflictError(
            f"box {code} is already {existing.status}; close it first",
            text="lab.err.box_busy",
            values={"code": code},
        )
    batch = LabBatch(
        code=code,
        status=BatchStatus.PACKING.value,
        origin_id=origin_id,
        created_at=datetime.now(UTC),
        created_by=actor.user_id if actor else None,
    )
    session.add(batch)
    session.flush()
    _audit(session, actor, remote_addr, "batch.pack", batch, before=None, after=snapshot(batch))
    return batch


def pack_tube(
    session: Session,
    batch: LabBatch,
    tube_code: str,
    *,
    actor: Principal | None = None,
    remote_addr: str | None = None,
) -> ScanOutcome:
    if batch.status != BatchStatus.PACKING:
        raise ConflictError(
            f"box {batch.code} is {batch.status}: tubes can no longer be added",
            text="lab.err.not_packing",
            values={"code": batch.code},
        )
    now = datetime.now(UTC)
    tube, _ = ensure_tube(session, clean_code(tube_code, "tube code"), now)
    line = session.scalars(
        select(LabBatchTube).where(
            LabBatchTube.batch_id == batch.id, LabBatchTube.tube_id == tube.id
        )
    ).first()
    if line is not None:
        return ScanOutcome.ALREADY_PACKED
    before = _tube_state(tube, None)
    line = LabBatchTube(batch_id=batch.id, tube_id=tube.id, expected=True, packed_at=now)
    session.add(line)
    session.flush()
    _audit(
        session,
        actor,
        remote_addr,
        "batch.pack_tube",
        batch,
        tube=tube.code,
        before=before,
        after=_tube_state(tube, line),
    )
    return ScanOutcome.PACKED


def ship(
    session: Session,
    batch: LabBatch,
    *,
    lab_id: int | None,
    actor: Principal | None = None,
    remote_addr: str | None = None,
) -> int:
    """Mark a packed box shipped: a ``shipped`` event for every tube on it. Returns the count."""
    if batch.status != BatchStatus.PACKING:
        raise ConflictError(
            f"box {batch.code} is {batch.status}, not being packed",
            text="lab.err.not_packing",
            values={"code": batch.code},
        )
    now = datetime.now(UTC)
    tube_ids = list(
        session.scalars(select(LabBatchTube.tube_id).where(LabBatchTube.batch_id == batch.id))
    )
    if not tube_ids:
        raise BadRequestError(
            f"box {batch.code} is empty", text="lab.err.box_empty", values={"code": batch.code}
        )
    before = snapshot(batch)
    for tid in tube_ids:
        record_event(
            session,
            tube_id=tid,
            kind=SampleStage.SHIPPED,
            at=now,
            facility_id=batch.origin_id,
            user_id=actor.user_id if actor else None,
            details={"batch": batch.code, "batch_id": batch.id},
        )
    batch.status = BatchStatus.SHIPPED.value
    batch.shipped_at = now
    batch.lab_id = lab_id
    session.flush()
    after = {**(snapshot(batch) or {}), "tubes": len(tube_ids)}
    _audit(session, actor, remote_addr, "batch.ship", batch, before=before, after=after)
    return len(tube_ids)


# --- reception at the lab ---------------------------------------------------------------------


def start_reception(
    session: Session,
    *,
    code: str,
    lab_id: int | None,
    actor: Principal | None = None,
    remote_addr: str | None = None,
    station_id: str | None = None,
    at: datetime | None = None,
) -> LabBatch:
    """The batch of box ``code`` at ``lab_id``, now receiving; a new one if nobody packed it."""
    code = clean_code(code, "box code")
    now = at or datetime.now(UTC)
    batch = open_batch(session, code)
    if batch is not None and batch.status == BatchStatus.RECEIVING:
        if batch.lab_id is not None and lab_id is not None and batch.lab_id != lab_id:
            raise ConflictError(
                f"box {code} is being received by another lab",
                text="lab.err.other_lab",
                values={"code": code},
            )
        return batch
    if batch is not None and batch.status == BatchStatus.PACKING:
        # Shipped without anyone pressing "ship": the manifest so far is what left.
        ship(session, batch, lab_id=lab_id, actor=actor, remote_addr=remote_addr)
    before = snapshot(batch)
    if batch is None:
        batch = LabBatch(
            code=code,
            status=BatchStatus.RECEIVING.value,
            created_at=now,
            created_by=actor.user_id if actor else None,
            station_id=station_id,
        )
        session.add(batch)
    batch.status = BatchStatus.RECEIVING.value
    batch.lab_id = lab_id
    batch.received_at = now
    batch.station_id = batch.station_id or station_id
    session.flush()
    _audit(
        session, actor, remote_addr, "batch.receive", batch, before=before, after=snapshot(batch)
    )
    return batch


def receive_tube(
    session: Session,
    *,
    tube_code: str,
    lab_id: int | None,
    batch: LabBatch | None = None,
    at: datetime | None = None,
    actor: Principal | None = None,
    remote_addr: str | None = None,
    station_id: str | None = None,
    record_id: str | None = None,
) -> ScanOutcome:
    """A tube scanned at the lab: a ``received_at_lab`` event (once per tube and lab), and its
    line in ``batch``."""
    now = datetime.now(UTC)
    when = at or now
    user_id = actor.user_id if actor else None
    tube, known = ensure_tube(session, clean_code(tube_code, "tube code"), now)
    if batch is not None and batch.status != BatchStatus.RECEIVING:
        raise ConflictError(
            f"box {batch.code} is {batch.status}, not being received",
            text="lab.err.not_receiving",
            values={"code": batch.code},
        )
    already = session.scalar(
        select(func.count())
        .select_from(SampleEvent)
        .where(
            SampleEvent.tube_id == tube.id,
            SampleEvent.kind == SampleStage.RECEIVED_AT_LAB.value,
            SampleEvent.facility_id.is_(None)
            if lab_id is None
            else SampleEvent.facility_id == lab_id,
        )
    )
    line = None
    if batch is not None:
        line = session.scalars(
            select(LabBatchTube).where(
                LabBatchTube.batch_id == batch.id, LabBatchTube.tube_id == tube.id
            )
        ).first()
    before = _tube_state(tube, line)
    if already:
        if line is not None and line.received_at is None:
            line.received_at, line.received_by, line.station_id = when, user_id, station_id
        elif line is None and batch is not None:
            line = _line(batch, tube, when, user_id, station_id, record_id)
            session.add(line)
        else:
            return ScanOutcome.ALREADY_RECEIVED
        session.flush()
        _audit_received(session, actor, remote_addr, batch, tube, before, line)
        return ScanOutcome.ALREADY_RECEIVED
    record_event(
        session,
        tube_id=tube.id,
        kind=SampleStage.RECEIVED_AT_LAB,
        at=when,
        facility_id=lab_id,
        station_id=station_id,
        record_id=record_id,
        user_id=user_id,
        details={"batch": batch.code} if batch is not None else None,
    )
    outcome = ScanOutcome.RECEIVED if known else ScanOutcome.UNKNOWN_TUBE
    if line is None and batch is not None:
        manifest = session.scalar(
            select(func.count())
            .select_from(LabBatchTube)
            .where(LabBatchTube.batch_id == batch.id, LabBatchTube.expected.is_(True))
        )
        line = _line(batch, tube, when, user_id, station_id, record_id)
        session.add(line)
        if manifest:
            outcome = ScanOutcome.UNEXPECTED
    elif line is not None:
        line.received_at, line.received_by = when, user_id
        line.station_id, line.record_id = station_id, record_id
    session.flush()
    _audit_received(session, actor, remote_addr, batch, tube, before, line)
    return outcome


def _audit_received(
    session: Session,
    actor: Principal | None,
    remote_addr: str | None,
    batch: LabBatch | None,
    tube: Tube,
    before: dict[str, Any],
    line: LabBatchTube | None,
) -> None:
    if actor is None:
        return
    session.refresh(tube)  # its status moved in SQL (server.samples.record_event)
    after = _tube_state(tube, line)
    if batch is None:
        audit(
            session,
            actor,
            "batch.receive_tube",
            object_type="tube",
            object_id=tube.code,
            organisation_id=tube.lab_id,
            before=before,
            after=after,
            remote_addr=remote_addr,
        )
        return
    _audit(
        session,
        actor,
        remote_addr,
        "batch.receive_tube",
        batch,
        tube=tube.code,
        before=before,
        after=after,
    )


def _line(
    batch: LabBatch,
    tube: Tube,
    at: datetime,
    user_id: int | None,
    station_id: str | None,
    record_id: str | None,
) -> LabBatchTube:
    return LabBatchTube(
        batch_id=batch.id,
        tube_id=tube.id,
        expected=False,
        received_at=at,
        received_by=user_id,
        station_id=station_id,
        record_id=record_id,
    )


def close_batch(
    session: Session,
    batch: LabBatch,
    *,
    actor: Principal | None = None,
    remote_addr: str | None = None,
) -> BatchView:
    """Finish the reception: manifest tubes never scanned are from now on missing."""
    if batch.status != BatchStatus.RECEIVING:
        raise ConflictError(
            f"box {batch.code} is {batch.status}, not being received",
            text="lab.err.not_receiving",
            values={"code": batch.code},
        )
    before = snapshot(batch)
    batch.status = BatchStatus.CLOSED.value
    batch.closed_at = datetime.now(UTC)
    session.flush()
    out = view(session, batch)
    after = {
        **(snapshot(batch) or {}),
        **{flag: out.count(flag) for flag in ("received", "missing", "unexpected")},
    }
    _audit(session, actor, remote_addr, "batch.close", batch, before=before, after=after)
    return out


def view(session: Session, batch: LabBatch) -> BatchView:
    rows = session.execute(
        select(LabBatchTube, Tube.code, Tube.opened_record_id)
        .join(Tube, Tube.id == LabBatchTube.tube_id)
        .where(LabBatchTube.batch_id == batch.id)
        .order_by(LabBatchTube.received_at.is_(None).desc(), Tube.code)
    ).all()
    out = BatchView(
        batch=batch,
        origin=session.get(Organisation, batch.origin_id) if batch.origin_id else None,
        lab=session.get(Organisation, batch.lab_id) if batch.lab_id else None,
    )
    for line, code, opened in rows:
        out.lines.append(
            TubeLine(
                code=code, expected=line.expected, received_at=line.received_at, known=bool(opened)
            )
        )
    order = {"missing": 0, "unexpected": 1, "pending": 2, "received": 3}
    out.lines.sort(key=lambda line: (order[out.flag(line)], line.code))
    return out


def get_batch(session: Session, batch_id: int) -> LabBatch:
    batch = session.get(LabBatch, batch_id)
    if batch is None:
        raise NotFoundError(f"no batch {batch_id}", text="lab.err.no_box")
    return batch


def receive_from_stations(
    session: Session,
    items: Sequence[tuple[Record, TubeReceived, datetime]],
    facility: dict[str, int | None],
) -> None:
    """``tube_received`` records from lab stations (called by ingest's projection)."""
    for record, data, at in items:
        lab_id = facility.get(record.station_id)
        batch = None
        if data.batch is not None:
            try:
                batch = start_reception(
                    session, code=data.batch, lab_id=lab_id, station_id=record.station_id, at=at
                )
            except (ConflictError, BadRequestError):
                batch = None  # the box is another lab's: keep the tube, not the box
        receive_tube(
            session,
            tube_code=data.tube,
            lab_id=lab_id,
            batch=batch,
            at=at,
            station_id=record.station_id,
            record_id=record.record_id,
        )
