"""Results at the lab: per-tube entry, corrections, CSV imports, recall lists, and the
notifications each result queues for the people in its tube.

A tube's result applies to every person in its pool (the pool members not undone). A negative
pool clears them all; a positive pool means each of them must be re-sampled individually (the
recall list); a positive single sample is that person's positive result.

Corrections never overwrite: ``server.samples.add_result`` keeps the earlier row, superseded,
and the correction carries its reason; both are in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from server.access import Permission, Principal, Scope
from server.audit import audit, snapshot
from server.errors import BadRequestError, NotFoundError
from server.models import (
    Declaration,
    Notification,
    Organisation,
    Person,
    PoolMember,
    Result,
    ResultImport,
    SampleEvent,
    Tube,
)
from server.notify import enqueue
from server.public import mask_key
from server.result_csv import ParsedFile, RowStatus
from server.samples import add_result, current_result, lock_tube, lock_tubes
from server.signing import SlipRef, SlipSigner
from server.spreadsheet import csv_bytes

VALUES = ("positive", "negative", "invalid")
MAX_REASON = 500


def _translator(lang: str) -> Callable[..., str]:
    # Imported when called: the server.web package imports the routers that import this module.
    from server.web.i18n import translator

    return translator(lang)


@dataclass(frozen=True)
class ResultsContext:
    """What result handling needs from the configuration."""

    signer: SlipSigner
    tz: ZoneInfo
    base_url: str | None = None
    """The public address of the server, for links in notifications."""


@dataclass
class EntryOutcome:
    status: str
    """``saved``, ``unchanged`` or ``corrected``."""
    tube: Tube
    result: Result | None
    persons: int


def find_tube(session: Session, scope: Scope, code: str) -> Tube:
    """The tube with barcode ``code`` if its sampling facility or its lab is in ``scope``."""
    tube = session.scalars(
        select(Tube).where(
            Tube.code == code.strip(), scope.filter_any(Tube.lab_id, Tube.facility_id)
        )
    ).first()
    if tube is None:
        raise NotFoundError(
            f"no tube {code.strip()!r} among the tubes you can see",
            text="lab.err.no_tube",
            values={"code": code.strip()},
        )
    return tube


def members(session: Session, tube_id: int) -> list[tuple[PoolMember, Person]]:
    """The persons currently in a tube (undone ones left out), in pool order."""
    return [
        (m, p)
        for m, p in session.execute(
            select(PoolMember, Person)
            .join(Person, Person.id == PoolMember.person_id)
            .where(PoolMember.tube_id == tube_id, PoolMember.undone_at.is_(None))
            .order_by(PoolMember.position, PoolMember.id)
        ).all()
    ]


def history(session: Session, tube_id: int) -> list[Result]:
    return list(
        session.scalars(select(Result).where(Result.tube_id == tube_id).order_by(Result.id))
    )


def timeline(session: Session, tube_id: int) -> list[SampleEvent]:
    return list(
        session.scalars(
            select(SampleEvent)
            .where(SampleEvent.tube_id == tube_id)
            .order_by(SampleEvent.at, SampleEvent.id)
        )
    )


def enter_result(
    session: Session,
    principal: Principal,
    ctx: ResultsContext,
    *,
    tube_code: str,
    value: str,
    reason: str | None = None,
    reported_at: datetime | None = None,
    test_kind: str | None = None,
    remote_addr: str | None = None,
) -> EntryOutcome:
    """Record ``value`` for a tube (scanned at the lab). The same value again changes nothing;
    another value is a correction and needs a ``reason``."""
    if value not in VALUES:
        raise BadRequestError(f"result must be one of {', '.join(VALUES)}", text="entry.err.value")
    scope = principal.require(Permission.RESULT_WRITE)
    tube = find_tube(session, scope, tube_code)
    lock_tube(session, tube.id)  # two entries for one tube at once: the second sees the first
    current = current_result(session, tube.id)
    persons = len(members(session, tube.id))
    reason = (reason or "").strip() or None
    if current is not None and current.value == value:
        return EntryOutcome("unchanged", tube, current, persons)
    if current is not None and reason is None:
        raise BadRequestError(
            f"tube {tube.code} already has the result {current.value}: a correction needs a reason",
            text="entry.err.needs_reason",
            values={"code": tube.code, "value_text": f"result.{current.value}"},
        )
    if reason is not None and len(reason) > MAX_REASON:
        raise BadRequestError(
            f"the reason is longer than {MAX_REASON} characters",
            text="entry.err.reason_long",
            values={"max": MAX_REASON},
        )
    before = snapshot(current)
    result = add_result(
        session,
        tube_id=tube.id,
        value=value,
        source="lab",
        reported_at=reported_at or datetime.now(UTC),
        test_kind=test_kind or tube.test_kind,
        facility_id=tube.lab_id,
        entered_by=principal.user_id,
        correction_reason=reason if current is not None else None,
    )
    status = "corrected" if current is not None else "saved"
    audit(
        session,
        principal,
        "result.correct" if current is not None else "result.enter",
        object_type="tube",
        object_id=tube.code,
        organisation_id=tube.lab_id or tube.facility_id,
        before=before,
        after=snapshot(result),
        remote_addr=remote_addr,
    )
    session.refresh(tube)
    return EntryOutcome(status, tube, result, persons)


# --- notifications ------------------------------------------------------------------------------


def person_message_key(value: str, pooled: bool) -> str:
    if value == "positive":
        return "notify.pool_positive" if pooled else "notify.positive"
    return f"notify.{value}"


def queue_notifications(
    session: Session,
    ctx: ResultsContext,
    tube: Tube,
    result: Result,
    person_ids: Sequence[int],
) -> int:
    """Queue one notification per person of ``person_ids`` in ``tube`` for ``result``."""
    pooled = tube.mode == "pool"
    declared = {
        pid: (name, phone)
        for pid, name, phone in session.execute(
            select(Declaration.person_id, Declaration.name, Declaration.phone)
            .where(Declaration.person_id.in_(person_ids))
            .order_by(Declaration.id)
        ).all()
    }
    queued = 0
    sampled = tube.closed_at or tube.opened_at or result.reported_at
    local_day = sampled.astimezone(ctx.tz).date().isoformat()
    wanted = set(person_ids)
    for _member, person in members(session, tube.id):
        if person.id not in wanted:
            continue
        token = ctx.signer.sign(SlipRef(result.id, person.id))
        declared_name, phone = declared.get(person.id, (None, None))
        # The text goes to an SMS gateway and a phone's lock screen: the declared name (with
        # its diacritics), else a name read reliably, else the ID number masked, never whole.
        reliable = person.name if person.name_reliable else None
        name = declared_name or reliable or mask_key(person.key)
        message_key = person_message_key(result.value, pooled)
        payload: dict[str, Any] = {
            "event": "result",
            "result_id": result.id,
            "tube": tube.code,
            "value": result.value,
            "pooled": pooled,
            "action": _action(result.value, pooled),
            "test_kind": result.test_kind,
            "reported_at": result.reported_at.isoformat(),
            "sampled_at": sampled.isoformat(),
            "correction": result.supersedes_id is not None,
            "person": {
                "key_type": person.key_type,
                "key": person.key,
                "name": person.name,
                "phone": phone,
            },
            "message": {
                lang: _translator(lang)(message_key, name=name, date=local_day)
                for lang in ("vi", "en")
            },
            "verify_url": f"{ctx.base_url}/v/{token}" if ctx.base_url else None,
            "lookup_url": f"{ctx.base_url}/lookup" if ctx.base_url else None,
        }
        enqueue(
            session,
            event="result",
            dedup_key=f"result:{result.id}:{person.id}",
            payload=payload,
            person_id=person.id,
            result_id=result.id,
        )
        queued += 1
    return queued


def sweep_notifications(
    session: Session, ctx: ResultsContext, *, since: datetime, limit: int = 1000
) -> int:
    """Queue the notifications still missing for current results entered since ``since``:
    one per person in the tube. Covers every way a result arrives (web entry, CSV import,
    on-site results from stations) and persons whose records reached the server after the
    result. Idempotent (one notification per result and person)."""
    missing = session.execute(
        select(Result.id, PoolMember.person_id)
        .join(PoolMember, PoolMember.tube_id == Result.tube_id)
        .where(
            Result.superseded_at.is_(None),
            Result.entered_at >= since,
            PoolMember.undone_at.is_(None),
            ~exists().where(
                Notification.result_id == Result.id,
                Notification.person_id == PoolMember.person_id,
            ),
        )
        .order_by(Result.id)
        .limit(limit)
    ).all()
    by_result: dict[int, list[int]] = {}
    for rid, pid in missing:
        by_result.setdefault(rid, []).append(pid)
    queued = 0
    for rid, pids in by_result.items():
        result = session.get(Result, rid)
        assert result is not None
        tube = session.get(Tube, result.tube_id)
        assert tube is not None
        queued += queue_notifications(session, ctx, tube, result, pids)
    return queued


def _action(value: str, pooled: bool) -> str:
    if value == "negative":
        return "none"
    if value == "invalid":
        return "resample"
    return "recall" if pooled else "isolate"


# --- CSV import ---------------------------------------------------------------------------------


@dataclass
class ImportOutcome:
    applied: bool
    parsed: ParsedFile
    record: ResultImport
    new: int = 0
    unchanged: int = 0
    errors: int = 0
    tubes: list[str] = field(default_factory=list)


def check_rows(
    session: Session, scope: Scope, parsed: ParsedFile, *, lock: bool = False
) -> dict[str, Tube]:
    """Judge the rows that read well against the database: unknown tubes, and tubes whose
    current result differs (a correction is one tube at a time, with a reason). With ``lock``,
    the tubes are locked (``lock_tubes``) before their results are read, until the
    transaction ends: what was checked is what gets applied."""
    codes = sorted({r.tube for r in parsed.rows if r.status is RowStatus.NEW})
    tubes: dict[str, Tube] = {}
    for i in range(0, len(codes), 500):
        chunk = codes[i : i + 500]
        for tube in session.scalars(
            select(Tube).where(
                Tube.code.in_(chunk), scope.filter_any(Tube.lab_id, Tube.facility_id)
            )
        ):
            tubes[tube.code] = tube
    current: dict[int, Result] = {}
    ids = [t.id for t in tubes.values()]
    if lock:
        lock_tubes(session, ids)
    for i in range(0, len(ids), 500):
        for r in session.scalars(
            select(Result).where(
                Result.tube_id.in_(ids[i : i + 500]), Result.superseded_at.is_(None)
            )
        ):
            current[r.tube_id] = r
    for row in parsed.rows:
        if row.status is not RowStatus.NEW:
            continue
        found = tubes.get(row.tube)
        if found is None:
            row.fail(
                "unknown_tube",
                f"unknown tube {row.tube} (not received at a lab you work for)",
                tube=row.tube,
            )
            continue
        have = current.get(found.id)
        if have is None:
            continue
        if have.value == row.result:
            row.status = RowStatus.UNCHANGED
        else:
            row.fail(
                "has_result",
                f"tube {row.tube} already has the result {have.value}: correct it on the "
                "tube's page, with a reason",
                tube=row.tube,
                value=have.value,
            )
    return tubes


def import_results(
    session: Session,
    principal: Principal,
    ctx: ResultsContext,
    parsed: ParsedFile,
    *,
    filename: str,
    sha256: str,
    apply: bool,
    remote_addr: str | None = None,
) -> ImportOutcome:
    """Check a parsed file against the database and, if ``apply`` and every row is valid,
    record its results, all in ``session``'s one transaction. A file with any error applies
    nothing; its report is kept all the same (``result_imports``) when ``apply`` was asked."""
    scope = principal.require(Permission.RESULT_WRITE)
    tubes = check_rows(session, scope, parsed, lock=apply) if not parsed.errors else {}
    new = [r for r in parsed.rows if r.status is RowStatus.NEW]
    outcome = ImportOutcome(
        applied=False,
        parsed=parsed,
        record=ResultImport(),
        new=len(new),
        unchanged=parsed.count(RowStatus.UNCHANGED),
        errors=parsed.count(RowStatus.ERROR) + len(parsed.errors),
    )
    labs = {t.lab_id for t in tubes.values() if t.lab_id is not None}
    record = ResultImport(
        filename=filename[:255],
        sha256=sha256,
        lab_id=labs.pop() if len(labs) == 1 else None,
        uploaded_by=principal.user_id,
        uploaded_at=datetime.now(UTC),
        status="applied" if parsed.ok else "rejected",
        rows_total=len([r for r in parsed.rows if r.status is not RowStatus.BLANK]),
        rows_applied=len(new) if parsed.ok else 0,
        rows_unchanged=outcome.unchanged,
        rows_error=outcome.errors,
        mapping=dict(parsed.mapping),
        report=report_json(parsed),
    )
    outcome.record = record
    if not apply:
        return outcome
    session.add(record)
    if not parsed.ok:
        session.flush()
        return outcome
    for row in new:
        tube = tubes[row.tube]
        assert row.result is not None and row.reported_at is not None
        result = add_result(
            session,
            tube_id=tube.id,
            value=row.result,
            source="import",
            reported_at=row.reported_at,
            test_kind=row.test_kind or tube.test_kind,
            facility_id=tube.lab_id,
            entered_by=principal.user_id,
        )
        audit(
            session,
            principal,
            "result.import",
            object_type="tube",
            object_id=tube.code,
            organisation_id=tube.lab_id or tube.facility_id,
            before=None,
            after={**(snapshot(result) or {}), "import_file": filename, "line": row.line},
            remote_addr=remote_addr,
        )
        outcome.tubes.append(tube.code)
    session.flush()
    outcome.applied = True
    return outcome


def report_json(parsed: ParsedFile) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"line": 0, "status": "error", "errors": [e]} for e in parsed.errors
    ]
    for r in parsed.rows:
        out.append(
            {
                "line": r.line,
                "tube": r.tube,
                "result": r.result,
                "status": r.status.value,
                "errors": r.errors,
            }
        )
    return out


# --- recall lists -------------------------------------------------------------------------------


@dataclass
class RecallLine:
    position: int
    person: Person
    name: str | None
    """As declared (with diacritics) when the person self-declared, else as scanned."""
    phone: str | None
    resampled_in: str | None
    """The code of a later tube this person was sampled in, if any."""


@dataclass
class RecallPool:
    tube: Tube
    result: Result
    facility: Organisation | None
    persons: int = 0
    resampled: int = 0
    lines: list[RecallLine] = field(default_factory=list)


def _positive(scope: Scope, since: datetime | None, until: datetime | None) -> Select[Tube, Result]:
    stmt = (
        select(Tube, Result)
        .join(Result, and_(Result.tube_id == Tube.id, Result.superseded_at.is_(None)))
        .where(
            Tube.mode == "pool",
            Result.value == "positive",
            scope.filter_any(Tube.lab_id, Tube.facility_id),
        )
    )
    if since is not None:
        stmt = stmt.where(Result.reported_at >= since)
    if until is not None:
        stmt = stmt.where(Result.reported_at < until)
    return stmt


def positive_pools(
    session: Session,
    scope: Scope,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = 200,
    offset: int = 0,
) -> list[RecallPool]:
    """Tubes whose current result is positive and that hold a pool, reported in
    [``since``, ``until``), newest first, with how many of their persons were sampled again
    since. ``limit`` None: all of them."""
    stmt = (
        _positive(scope, since, until)
        .order_by(Result.reported_at.desc(), Result.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [_recall(session, scope, tube, result) for tube, result in session.execute(stmt).all()]


def count_positive_pools(
    session: Session, scope: Scope, *, since: datetime | None = None, until: datetime | None = None
) -> int:
    """How many pools ``positive_pools`` would list without a limit."""
    inner = _positive(scope, since, until).with_only_columns(Result.id).subquery()
    return session.scalar(select(func.count()).select_from(inner)) or 0


def recall_list(session: Session, scope: Scope, tube_code: str) -> RecallPool:
    tube = find_tube(session, scope, tube_code)
    result = current_result(session, tube.id)
    if result is None or result.value != "positive" or tube.mode != "pool":
        raise NotFoundError(
            f"tube {tube.code} is not a positive pool",
            text="recall.err.not_positive",
            values={"code": tube.code},
        )
    return _recall(session, scope, tube, result)


def _recall(session: Session, scope: Scope, tube: Tube, result: Result) -> RecallPool:
    later = aliased(PoolMember)
    later_tube = aliased(Tube)
    resampled = (
        select(later_tube.code)
        .join(later, later.tube_id == later_tube.id)
        .where(
            later.person_id == PoolMember.person_id,
            later.tube_id != tube.id,
            later.undone_at.is_(None),
            later.added_at >= result.reported_at,
            scope.filter_any(later_tube.lab_id, later_tube.facility_id),
        )
        .order_by(later.added_at)
        .limit(1)
        .scalar_subquery()
    )

    def declared(column: Any) -> Any:
        return (
            select(column)
            .where(Declaration.person_id == PoolMember.person_id)
            .order_by(Declaration.id.desc())
            .limit(1)
            .scalar_subquery()
        )

    rows = session.execute(
        select(
            PoolMember.position,
            Person,
            declared(Declaration.name),
            declared(Declaration.phone),
            resampled,
        )
        .join(Person, Person.id == PoolMember.person_id)
        .where(PoolMember.tube_id == tube.id, PoolMember.undone_at.is_(None))
        .order_by(PoolMember.position, PoolMember.id)
    ).all()
    pool = RecallPool(
        tube=tube,
        result=result,
        facility=session.get(Organisation, tube.facility_id) if tube.facility_id else None,
    )
    for position, person, name, ph, again in rows:
        pool.lines.append(RecallLine(position, person, name or person.name, ph, again))
    pool.persons = len(pool.lines)
    pool.resampled = sum(1 for line in pool.lines if line.resampled_in)
    return pool


def recall_csv(pools: Sequence[RecallPool], lang: str) -> bytes:
    """The recall lists as CSV (UTF-8 with a BOM for Excel). Names, addresses and phones come
    from people (a self-declaration is public): ``server.spreadsheet`` keeps them text."""
    t = _translator(lang)
    rows: list[list[object]] = [
        [
            t("recall.pool"),
            t("common.facility"),
            t("lookup.reported_at"),
            "#",
            t("recall.key"),
            t("common.name"),
            t("common.birth_date"),
            t("recall.phone"),
            t("recall.address"),
            t("recall.resampled"),
        ]
    ]
    for pool in pools:
        for line in pool.lines:
            p = line.person
            rows.append(
                [
                    pool.tube.code,
                    pool.facility.name if pool.facility else "",
                    pool.result.reported_at.isoformat(timespec="minutes"),
                    line.position,
                    p.key,
                    line.name or "",
                    p.birth_date or "",
                    line.phone or "",
                    p.address or "",
                    line.resampled_in or "",
                ]
            )
    return csv_bytes(rows)
