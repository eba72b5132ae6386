"""Search over what the stations recorded: records, persons, tubes, pools, samples; the audit log.

Personal data: every endpoint needs ``data.read`` (ops and technicians do not have it) and
returns only what belongs to the caller's part of the tree: a tube belongs to its sampling
facility and to the lab that received it; a person to every facility that sampled them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from server.access import Permission, Principal, Scope
from server.errors import NotFoundError
from server.models import (
    AuditEntry,
    Person,
    PoolMember,
    RecordRow,
    Result,
    SampleEvent,
    StationRow,
    Tube,
)
from server.web.deps import Caller, Db
from server.web.pagination import paginate
from server.web.schemas import (
    AuditOut,
    OrgIdQuery,
    Page,
    PageNo,
    PageSize,
    PathBigId,
    PersonDetailOut,
    PersonOut,
    PoolMemberOut,
    Problem,
    RecordOut,
    ResultOut,
    SampleEventOut,
    Text,
    TubeCodePath,
    TubeDetailOut,
    TubeOut,
    When,
)

router = APIRouter(prefix="/api")
ERRORS: dict[int | str, dict[str, object]] = {s: {"model": Problem} for s in (401, 403, 404)}
StationQ = Annotated[Text | None, Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def tube_scope(scope: Scope) -> ColumnElement[bool]:
    return scope.filter_any(Tube.facility_id, Tube.lab_id)


def tubes_in(scope: Scope) -> Select[Any]:
    return select(Tube.id).where(tube_scope(scope))


def _data_scope(caller: Principal) -> Scope:
    return caller.require(Permission.DATA_READ)


@router.get("/records", tags=["records"], responses=ERRORS)
def api_records(
    caller: Caller,
    db: Db,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    station_id: StationQ = None,
    kind: Annotated[Text | None, Query(max_length=32)] = None,
) -> list[RecordOut]:
    """The most recently received records (the raw log), newest first."""
    scope = _data_scope(caller)
    stations = select(StationRow.station_id).where(scope.filter(StationRow.facility_id))
    q = select(RecordRow).where(RecordRow.station_id.in_(stations))
    if station_id:
        q = q.where(RecordRow.station_id == station_id)
    if kind:
        q = q.where(RecordRow.kind == kind)
    q = q.order_by(RecordRow.received_at.desc(), RecordRow.seq.desc()).limit(limit)
    return [RecordOut.model_validate(r) for r in db.scalars(q)]


def persons_in(scope: Scope) -> Select[Any]:
    return (
        select(PoolMember.person_id)
        .join(Tube, Tube.id == PoolMember.tube_id)
        .where(tube_scope(scope))
    )


@router.get("/persons", tags=["search"], responses=ERRORS)
def search_persons(
    caller: Caller,
    db: Db,
    q: Annotated[Text | None, Query(max_length=100, description="ID/QID prefix or name.")] = None,
    key_type: Annotated[str | None, Query(pattern="^(cccd|qid|document)$")] = None,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[PersonOut]:
    """Persons sampled in the caller's scope."""
    scope = _data_scope(caller)
    stmt = select(Person).where(Person.id.in_(persons_in(scope)))
    if q:
        stmt = stmt.where(
            or_(
                Person.key.startswith(q, autoescape=True),
                func.lower(Person.name).contains(q.lower(), autoescape=True),
            )
        )
    if key_type:
        stmt = stmt.where(Person.key_type == key_type)
    return paginate(db, stmt.order_by(Person.id), page, page_size, PersonOut)


def _members(db: Session, *where: ColumnElement[bool]) -> list[PoolMemberOut]:
    rows = db.execute(
        select(PoolMember, Tube.code, Person)
        .join(Tube, Tube.id == PoolMember.tube_id)
        .join(Person, Person.id == PoolMember.person_id)
        .where(*where)
        .order_by(PoolMember.tube_id, PoolMember.position, PoolMember.id)
    ).all()
    return [_member(m, code, p) for m, code, p in rows]


def _member(m: PoolMember, code: str, p: Person) -> PoolMemberOut:
    return PoolMemberOut(
        tube_code=code,
        person_id=p.id,
        person_key_type=p.key_type,
        person_key=p.key,
        person_name=p.name,
        position=m.position,
        station_id=m.station_id,
        seq=m.seq,
        retest=m.retest,
        added_at=m.added_at,
        undone_at=m.undone_at,
    )


@router.get("/persons/{person_id}", tags=["search"], responses=ERRORS)
def get_person(person_id: PathBigId, caller: Caller, db: Db) -> PersonDetailOut:
    """A person with every pool they were in (within the caller's scope)."""
    scope = _data_scope(caller)
    person = db.scalar(
        select(Person).where(Person.id == person_id, Person.id.in_(persons_in(scope)))
    )
    if person is None:
        raise NotFoundError(f"no person {person_id}")
    pools = _members(db, PoolMember.person_id == person.id, tube_scope(scope))
    base = PersonOut.model_validate(person).model_dump()
    return PersonDetailOut(
        **base,
        address=person.address,
        document_number=person.document_number,
        old_id=person.old_id,
        issue_date=person.issue_date,
        pools=pools,
    )


@router.get("/tubes", tags=["search"], responses=ERRORS)
def search_tubes(
    caller: Caller,
    db: Db,
    q: Annotated[Text | None, Query(max_length=64, description="Tube code prefix.")] = None,
    status: Annotated[
        str | None, Query(pattern="^(open|collected|shipped|received_at_lab|resulted)$")
    ] = None,
    result: Annotated[str | None, Query(pattern="^(positive|negative|invalid)$")] = None,
    station_id: StationQ = None,
    facility_id: OrgIdQuery = None,
    opened_from: When | None = None,
    opened_to: When | None = None,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[TubeOut]:
    """Tubes (samples) of the caller's facilities and labs, newest first."""
    scope = _data_scope(caller)
    stmt = select(Tube).where(tube_scope(scope))
    if q:
        stmt = stmt.where(Tube.code.startswith(q, autoescape=True))
    if status:
        stmt = stmt.where(Tube.status == status)
    if result:
        stmt = stmt.where(Tube.result == result)
    if station_id:
        stmt = stmt.where(Tube.station_id == station_id)
    if facility_id is not None:
        stmt = stmt.where(or_(Tube.facility_id == facility_id, Tube.lab_id == facility_id))
    if opened_from is not None:
        stmt = stmt.where(Tube.opened_at >= opened_from)
    if opened_to is not None:
        stmt = stmt.where(Tube.opened_at < opened_to)
    return paginate(db, stmt.order_by(Tube.id.desc()), page, page_size, TubeOut)


def _event(e: SampleEvent, code: str) -> SampleEventOut:
    return SampleEventOut(
        id=e.id,
        tube_code=code,
        kind=e.kind,
        at=e.at,
        recorded_at=e.recorded_at,
        facility_id=e.facility_id,
        station_id=e.station_id,
        record_id=e.record_id,
        user_id=e.user_id,
        details=e.details,
    )


@router.get("/tubes/{code}", tags=["search"], responses=ERRORS)
def get_tube(code: TubeCodePath, caller: Caller, db: Db) -> TubeDetailOut:
    """A tube: its pool (with undone persons), lifecycle and every result (corrections too)."""
    scope = _data_scope(caller)
    tube = db.scalar(select(Tube).where(Tube.code == code, tube_scope(scope)))
    if tube is None:
        raise NotFoundError(f"no tube {code!r}")
    events = db.scalars(
        select(SampleEvent).where(SampleEvent.tube_id == tube.id).order_by(SampleEvent.at)
    )
    results = db.scalars(select(Result).where(Result.tube_id == tube.id).order_by(Result.id))
    return TubeDetailOut(
        **TubeOut.model_validate(tube).model_dump(),
        members=_members(db, PoolMember.tube_id == tube.id),
        events=[_event(e, tube.code) for e in events],
        results=[ResultOut.model_validate(r) for r in results],
    )


@router.get("/pools", tags=["search"], responses=ERRORS)
def search_pools(
    caller: Caller,
    db: Db,
    tube: Annotated[Text | None, Query(max_length=64, description="Tube code.")] = None,
    person_key: Annotated[Text | None, Query(max_length=64)] = None,
    station_id: StationQ = None,
    current_only: Annotated[bool, Query(description="Leave out undone persons.")] = False,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[PoolMemberOut]:
    """Pool memberships (tube <-> person, position, undo state) in the caller's scope."""
    scope = _data_scope(caller)
    stmt = (
        select(PoolMember, Tube.code, Person)
        .join(Tube, Tube.id == PoolMember.tube_id)
        .join(Person, Person.id == PoolMember.person_id)
        .where(tube_scope(scope))
    )
    if tube:
        stmt = stmt.where(Tube.code == tube)
    if person_key:
        stmt = stmt.where(Person.key == person_key)
    if station_id:
        stmt = stmt.where(PoolMember.station_id == station_id)
    if current_only:
        stmt = stmt.where(PoolMember.undone_at.is_(None))
    stmt = stmt.order_by(PoolMember.id.desc())
    return paginate(db, stmt, page, page_size, PoolMemberOut, convert=lambda r: _member(*r))


@router.get("/samples", tags=["search"], responses=ERRORS)
def search_samples(
    caller: Caller,
    db: Db,
    kind: Annotated[
        str | None, Query(pattern="^(collected|shipped|received_at_lab|resulted)$")
    ] = None,
    tube: Annotated[Text | None, Query(max_length=64, description="Tube code.")] = None,
    facility_id: OrgIdQuery = None,
    at_from: When | None = None,
    at_to: When | None = None,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[SampleEventOut]:
    """Sample lifecycle events (collected, shipped, received at lab, resulted), newest first."""
    scope = _data_scope(caller)
    stmt = select(SampleEvent, Tube.code).join(Tube, Tube.id == SampleEvent.tube_id)
    stmt = stmt.where(tube_scope(scope))
    if kind:
        stmt = stmt.where(SampleEvent.kind == kind)
    if tube:
        stmt = stmt.where(Tube.code == tube)
    if facility_id is not None:
        stmt = stmt.where(SampleEvent.facility_id == facility_id)
    if at_from is not None:
        stmt = stmt.where(SampleEvent.at >= at_from)
    if at_to is not None:
        stmt = stmt.where(SampleEvent.at < at_to)
    stmt = stmt.order_by(SampleEvent.at.desc(), SampleEvent.id.desc())
    return paginate(db, stmt, page, page_size, SampleEventOut, convert=lambda r: _event(*r))


@router.get("/audit", tags=["audit"], responses=ERRORS)
def search_audit(
    caller: Caller,
    db: Db,
    action: Annotated[Text | None, Query(max_length=64)] = None,
    object_type: Annotated[Text | None, Query(max_length=32)] = None,
    object_id: Annotated[Text | None, Query(max_length=64)] = None,
    at_from: When | None = None,
    at_to: When | None = None,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[AuditOut]:
    """Who changed what, when, with before and after; entries of nodes in the caller's scope."""
    scope = caller.require(Permission.AUDIT_READ)
    stmt = select(AuditEntry).where(scope.filter(AuditEntry.organisation_id))
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if object_type:
        stmt = stmt.where(AuditEntry.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEntry.object_id == object_id)
    if at_from is not None:
        stmt = stmt.where(AuditEntry.at >= at_from)
    if at_to is not None:
        stmt = stmt.where(AuditEntry.at < at_to)
    return paginate(db, stmt.order_by(AuditEntry.id.desc()), page, page_size, AuditOut)
