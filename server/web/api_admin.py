"""``/api/organisations``, ``/api/users``, ``/api/stations``: create, edit, deactivate.

Everything is scoped (``server.access``): objects outside the caller's scope are 404, a role
that does not allow the action is 403. Every write is audited in its own transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from server import orgs, users
from server.access import Permission, Principal
from server.audit import audit, snapshot
from server.errors import BadRequestError, ConflictError, NotFoundError
from server.models import (
    Organisation,
    OrgKind,
    StationEnrollmentRow,
    StationRow,
    Tube,
    User,
    UserRole,
)
from server.web.deps import Caller, Db, remote_addr
from server.web.pagination import paginate
from server.web.schemas import (
    GrantOut,
    OrganisationIn,
    OrganisationOut,
    OrganisationPatch,
    OrgIdQuery,
    Page,
    PageNo,
    PageSize,
    PathId,
    Problem,
    StationIdPath,
    StationIn,
    StationOut,
    StationPatch,
    Text,
    UserIn,
    UserOut,
    UserPatch,
)

router = APIRouter(prefix="/api")
ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": Problem} for s in (400, 401, 403, 404, 409)
}
Q = Annotated[Text | None, Query(max_length=100, description="Code or name contains.")]


# --- organisations -------------------------------------------------------------------------


@router.get("/organisations", tags=["organisations"], responses=ERRORS)
def list_organisations(
    caller: Caller,
    db: Db,
    q: Q = None,
    kind: OrgKind | None = None,
    active: bool | None = None,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[OrganisationOut]:
    """Organisations in the caller's scope, in tree order."""
    scope = caller.require(Permission.ORG_READ)
    stmt = select(Organisation).where(Organisation.id.in_(scope.org_ids()))
    if q:
        needle = q.lower()
        stmt = stmt.where(
            or_(
                func.lower(Organisation.code).contains(needle, autoescape=True),
                func.lower(Organisation.name).contains(needle, autoescape=True),
            )
        )
    if kind is not None:
        stmt = stmt.where(Organisation.kind == kind.value)
    if active is not None:
        stmt = stmt.where(Organisation.active.is_(active))
    return paginate(db, stmt.order_by(Organisation.path), page, page_size, OrganisationOut)


@router.post("/organisations", tags=["organisations"], status_code=201, responses=ERRORS)
def create_organisation(
    body: OrganisationIn, caller: Caller, db: Db, request: Request
) -> OrganisationOut:
    """Add a district or facility under a node in scope (provinces: `swabline admin`)."""
    parent = None
    if body.parent_id is not None:
        parent = orgs.get_in_scope(db, caller, body.parent_id, Permission.ORG_WRITE)
    org = orgs.create(
        db,
        caller,
        code=body.code,
        name=body.name,
        kind=body.kind,
        parent=parent,
        facility_kind=body.facility_kind.value if body.facility_kind else None,
        remote_addr=remote_addr(request),
    )
    db.commit()
    return OrganisationOut.model_validate(org)


@router.get("/organisations/{org_id}", tags=["organisations"], responses=ERRORS)
def get_organisation(org_id: PathId, caller: Caller, db: Db) -> OrganisationOut:
    return OrganisationOut.model_validate(
        orgs.get_in_scope(db, caller, org_id, Permission.ORG_READ)
    )


@router.patch("/organisations/{org_id}", tags=["organisations"], responses=ERRORS)
def patch_organisation(
    org_id: PathId, body: OrganisationPatch, caller: Caller, db: Db, request: Request
) -> OrganisationOut:
    """Rename, move, change the facility kind, deactivate (``active: false``) or reactivate."""
    org = orgs.get_in_scope(db, caller, org_id, Permission.ORG_WRITE)
    parent = None
    if body.parent_id is not None:
        parent = orgs.get_in_scope(db, caller, body.parent_id, Permission.ORG_WRITE)
    orgs.change(
        db,
        caller,
        org,
        orgs.OrgChange(
            name=body.name,
            facility_kind=body.facility_kind.value if body.facility_kind else None,
            parent=parent,
            active=body.active,
        ),
        remote_addr=remote_addr(request),
    )
    db.commit()
    return OrganisationOut.model_validate(org)


# --- users ---------------------------------------------------------------------------------


def user_out(db: Session, user: User) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        locale=user.locale,
        active=user.active,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
        roles=[
            GrantOut(role=g.role, organisation_id=o.id, organisation_code=o.code)
            for g, o in users.grants_of(db, user.id)
        ],
    )


def visible_users(caller: Principal) -> ColumnElement[bool]:
    scope = caller.require(Permission.USER_READ)
    in_scope = select(UserRole.user_id).where(UserRole.organisation_id.in_(scope.org_ids()))
    clause: ColumnElement[bool] = User.id.in_(in_scope)
    if scope.includes_unassigned:
        clause = or_(clause, ~User.id.in_(select(UserRole.user_id)))
    return clause


@router.get("/users", tags=["users"], responses=ERRORS)
def list_users(
    caller: Caller,
    db: Db,
    q: Annotated[
        Text | None, Query(max_length=100, description="Username or name contains.")
    ] = None,
    role: Annotated[Text | None, Query(max_length=32)] = None,
    active: bool | None = None,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[UserOut]:
    """Users holding a role somewhere in the caller's scope."""
    stmt = select(User).where(visible_users(caller))
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(
            or_(func.lower(User.username).like(like), func.lower(User.display_name).like(like))
        )
    if role:
        stmt = stmt.where(User.id.in_(select(UserRole.user_id).where(UserRole.role == role)))
    if active is not None:
        stmt = stmt.where(User.active.is_(active))
    total = db.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = db.scalars(stmt.order_by(User.username).offset((page - 1) * page_size).limit(page_size))
    return Page(items=[user_out(db, u) for u in rows], total=total, page=page, page_size=page_size)


def _user_in_scope(db: Session, caller: Principal, user_id: int) -> User:
    caller.require(Permission.USER_READ)
    user = db.get(User, user_id)
    if user is None or not users.visible(db, caller, user):
        raise NotFoundError(f"no user {user_id}")
    return user


@router.post("/users", tags=["users"], status_code=201, responses=ERRORS)
def create_user(body: UserIn, caller: Caller, db: Db, request: Request) -> UserOut:
    """Create a login with one or more roles at nodes in the caller's scope."""
    user = users.create(
        db,
        caller,
        username=body.username,
        display_name=body.display_name,
        password=body.password,
        locale=body.locale,
        grants=[users.GrantSpec(g.role, g.organisation_id) for g in body.roles],
        remote_addr=remote_addr(request),
    )
    db.commit()
    return user_out(db, user)


@router.get("/users/{user_id}", tags=["users"], responses=ERRORS)
def get_user(user_id: PathId, caller: Caller, db: Db) -> UserOut:
    return user_out(db, _user_in_scope(db, caller, user_id))


@router.patch("/users/{user_id}", tags=["users"], responses=ERRORS)
def patch_user(
    user_id: PathId, body: UserPatch, caller: Caller, db: Db, request: Request
) -> UserOut:
    """Edit a user; ``active: false`` deactivates and revokes their sessions and tokens."""
    caller.require(Permission.USER_WRITE)
    user = _user_in_scope(db, caller, user_id)
    users.change(
        db,
        caller,
        user,
        users.UserChange(
            display_name=body.display_name,
            password=body.password,
            locale=body.locale,
            active=body.active,
            grants=(
                [users.GrantSpec(g.role, g.organisation_id) for g in body.roles]
                if body.roles is not None
                else None
            ),
        ),
        remote_addr=remote_addr(request),
    )
    db.commit()
    return user_out(db, user)


# --- stations ------------------------------------------------------------------------------


def station_out(row: StationRow) -> StationOut:
    return StationOut(
        station_id=row.station_id,
        name=row.name,
        facility_id=row.facility_id,
        active=row.active,
        state=row.state,
        bd_seq=row.bd_seq,
        agent_version=row.agent_version,
        last_seen_at=row.last_seen_at,
        max_seq=row.max_seq,
        records=row.record_count,
        outbox_depth=row.outbox_depth,
        last_heartbeat_at=row.last_heartbeat_at,
    )


def station_in_scope(
    db: Session, caller: Principal, station_id: str, perm: Permission
) -> StationRow:
    scope = caller.require(perm)
    row = db.get(StationRow, station_id)
    if row is None:
        raise NotFoundError(f"no station {station_id!r}")
    path = None
    if row.facility_id is not None:
        org = db.get(Organisation, row.facility_id)
        path = org.path if org else None
    if not scope.covers_path(path):
        raise NotFoundError(f"no station {station_id!r}")
    return row


def _facility(db: Session, caller: Principal, facility_id: int) -> Organisation:
    org = orgs.get_in_scope(db, caller, facility_id, Permission.STATION_WRITE)
    if org.kind != OrgKind.FACILITY.value:
        raise BadRequestError(f"{org.code!r} is a {org.kind}; stations belong to facilities")
    if not org.active:
        raise ConflictError(f"facility {org.code!r} is deactivated")
    return org


def _adopt_tubes(db: Session, station_id: str, facility_id: int) -> None:
    """Tubes a station opened before it had a facility now belong to it."""
    db.execute(
        update(Tube)
        .where(Tube.station_id == station_id, Tube.facility_id.is_(None))
        .values(facility_id=facility_id)
        .execution_options(synchronize_session=False)
    )


@router.get("/stations", tags=["stations"], responses=ERRORS)
def list_stations(
    caller: Caller,
    db: Db,
    facility_id: OrgIdQuery = None,
    state: Annotated[Text | None, Query(max_length=16)] = None,
    active: bool | None = None,
) -> list[StationOut]:
    """Every station in the caller's scope with its state and record count.

    Stations that published before anyone registered them (no facility) are listed for callers
    scoped at a province.
    """
    scope = caller.require(Permission.STATION_READ)
    stmt = select(StationRow).where(scope.filter(StationRow.facility_id))
    if facility_id is not None:
        stmt = stmt.where(StationRow.facility_id == facility_id)
    if state:
        stmt = stmt.where(StationRow.state == state)
    if active is not None:
        stmt = stmt.where(StationRow.active.is_(active))
    return [station_out(r) for r in db.scalars(stmt.order_by(StationRow.station_id))]


@router.post("/stations", tags=["stations"], status_code=201, responses=ERRORS)
def create_station(body: StationIn, caller: Caller, db: Db, request: Request) -> StationOut:
    """Register a station (or claim one that already published, if it has no facility yet)."""
    scope = caller.require(Permission.STATION_WRITE)
    facility = _facility(db, caller, body.facility_id) if body.facility_id else None
    if facility is None and not scope.includes_unassigned:
        raise BadRequestError("facility_id is required")
    now = datetime.now(UTC)
    row = db.get(StationRow, body.station_id)
    before = None
    if row is not None:
        # A station that published before it was registered is claimed; otherwise it exists.
        if row.facility_id is not None or facility is None:
            raise ConflictError(f"station {body.station_id!r} exists")
        before = snapshot(row)
    else:
        row = StationRow(
            station_id=body.station_id,
            state="unknown",
            bd_seq=-1,
            max_seq=0,
            record_count=0,
            active=True,
            created_at=now,
        )
        db.add(row)
    row.name = body.name
    row.facility_id = facility.id if facility else None
    row.updated_at = now
    db.flush()
    if facility is not None:
        _adopt_tubes(db, row.station_id, facility.id)
    audit(
        db,
        caller,
        "station.create",
        object_type="station",
        object_id=row.station_id,
        organisation_id=row.facility_id,
        before=before,
        after=snapshot(row),
        remote_addr=remote_addr(request),
    )
    db.commit()
    return station_out(row)


@router.get("/stations/{station_id}", tags=["stations"], responses=ERRORS)
def get_station(station_id: StationIdPath, caller: Caller, db: Db) -> StationOut:
    return station_out(station_in_scope(db, caller, station_id, Permission.STATION_READ))


@router.patch("/stations/{station_id}", tags=["stations"], responses=ERRORS)
def patch_station(
    station_id: StationIdPath, body: StationPatch, caller: Caller, db: Db, request: Request
) -> StationOut:
    """Rename, move to another facility in scope, deactivate (``active: false``) a station."""
    row = station_in_scope(db, caller, station_id, Permission.STATION_WRITE)
    before = snapshot(row)
    if body.facility_id is not None and body.facility_id != row.facility_id:
        facility = _facility(db, caller, body.facility_id)
        row.facility_id = facility.id
        _adopt_tubes(db, row.station_id, facility.id)
    if body.name is not None:
        row.name = body.name
    if body.active is not None:
        enrolled = db.get(StationEnrollmentRow, row.station_id)
        if body.active and enrolled is not None and enrolled.decommissioned_at is not None:
            raise ConflictError(
                f"station {row.station_id!r} was decommissioned (its credentials are revoked): "
                "enroll a new station instead"
            )
        row.active = body.active
    row.updated_at = datetime.now(UTC)
    db.flush()
    after = snapshot(row)
    if before != after:
        audit(
            db,
            caller,
            "station.update",
            object_type="station",
            object_id=row.station_id,
            organisation_id=row.facility_id,
            before=before,
            after=after,
            remote_addr=remote_addr(request),
        )
    db.commit()
    return station_out(row)
