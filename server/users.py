"""User accounts and their role grants; shared by the API and ``swabline admin``.

A caller may create or change a user only if every grant the user holds, before and after the
change, is at a node inside the caller's ``user.write`` scope and is a role the caller may
grant there (a facility manager never makes provincial admins). Every change is audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.access import Permission, Principal
from server.audit import audit, snapshot
from server.auth import hash_password, revoke_all
from server.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError
from server.models import Organisation, Role, User, UserRole

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{2,63}$"
MIN_PASSWORD = 10


@dataclass(frozen=True)
class GrantSpec:
    role: Role
    organisation_id: int


def grants_of(db: Session, user_id: int) -> list[tuple[UserRole, Organisation]]:
    return [
        (g, o)
        for g, o in db.execute(
            select(UserRole, Organisation)
            .join(Organisation, Organisation.id == UserRole.organisation_id)
            .where(UserRole.user_id == user_id)
            .order_by(UserRole.id)
        ).all()
    ]


def user_snapshot(db: Session, user: User) -> dict[str, Any]:
    snap = snapshot(user) or {}
    snap["roles"] = [
        {"role": g.role, "organisation_id": g.organisation_id} for g, _ in grants_of(db, user.id)
    ]
    return snap


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadRequestError(f"a password needs at least {MIN_PASSWORD} characters")


def _check_grants(db: Session, principal: Principal, grants: Sequence[GrantSpec]) -> None:
    scope = principal.require(Permission.USER_WRITE)
    for g in grants:
        org = db.get(Organisation, g.organisation_id)
        if org is None or not scope.covers_path(org.path):
            raise NotFoundError(f"no organisation {g.organisation_id}")
        if not org.active:
            raise ConflictError(f"organisation {org.code!r} is deactivated")
        if g.role not in principal.grantable_roles(org.path):
            raise ForbiddenError(f"you cannot grant {g.role.value} at {org.code!r}")


def may_manage(db: Session, principal: Principal, user: User) -> bool:
    """Whether every grant ``user`` holds is one the caller could have given."""
    scope = principal.scope(Permission.USER_WRITE)
    if scope.empty:
        return False
    grants = grants_of(db, user.id)
    if not grants:
        return scope.includes_unassigned
    return all(
        Role(g.role) in principal.grantable_roles(o.path) and scope.covers_path(o.path)
        for g, o in grants
    )


def visible(db: Session, principal: Principal, user: User) -> bool:
    scope = principal.scope(Permission.USER_READ)
    grants = grants_of(db, user.id)
    if not grants:
        return scope.includes_unassigned
    return any(scope.covers_path(o.path) for _, o in grants)


def create(
    db: Session,
    principal: Principal,
    *,
    username: str,
    display_name: str,
    password: str,
    locale: str,
    grants: Sequence[GrantSpec],
    remote_addr: str | None = None,
) -> User:
    username = username.strip().lower()
    _check_grants(db, principal, grants)
    check_password(password)
    if db.scalar(select(User.id).where(User.username == username)) is not None:
        raise ConflictError(f"user {username!r} exists")
    now = datetime.now(UTC)
    user = User(
        username=username,
        display_name=display_name,
        password_hash=hash_password(password),
        locale=locale,
        active=True,
        created_at=now,
        updated_at=now,
        password_changed_at=now,
    )
    db.add(user)
    db.flush()
    for g in _unique(grants):
        db.add(UserRole(user_id=user.id, role=g.role.value, organisation_id=g.organisation_id))
    db.flush()
    audit(
        db,
        principal,
        "user.create",
        object_type="user",
        object_id=user.id,
        organisation_id=grants[0].organisation_id if grants else None,
        before=None,
        after=user_snapshot(db, user),
        remote_addr=remote_addr,
    )
    return user


def _unique(grants: Sequence[GrantSpec]) -> list[GrantSpec]:
    return list(dict.fromkeys(grants))


@dataclass(frozen=True)
class UserChange:
    display_name: str | None = None
    password: str | None = None
    locale: str | None = None
    active: bool | None = None
    grants: Sequence[GrantSpec] | None = None


def change(
    db: Session,
    principal: Principal,
    user: User,
    edit: UserChange,
    *,
    remote_addr: str | None = None,
) -> User:
    if not visible(db, principal, user):
        raise NotFoundError(f"no user {user.id}")
    if not may_manage(db, principal, user):
        raise ForbiddenError(f"you cannot change {user.username!r}: a role is beyond yours")
    if edit.active is False and user.id == principal.user_id:
        raise ConflictError("you cannot deactivate yourself")
    before = user_snapshot(db, user)
    now = datetime.now(UTC)
    if edit.grants is not None:
        if not edit.grants:
            raise BadRequestError("a user needs at least one role")
        _check_grants(db, principal, edit.grants)
        db.execute(delete(UserRole).where(UserRole.user_id == user.id))
        for g in _unique(edit.grants):
            db.add(UserRole(user_id=user.id, role=g.role.value, organisation_id=g.organisation_id))
    if edit.display_name is not None:
        user.display_name = edit.display_name
    if edit.locale is not None:
        user.locale = edit.locale
    if edit.password is not None:
        check_password(edit.password)
        user.password_hash = hash_password(edit.password)
        user.password_changed_at = now
    if edit.active is not None:
        user.active = edit.active
        if not edit.active:
            revoke_all(db, user.id)
    user.updated_at = now
    db.flush()
    after = user_snapshot(db, user)
    if edit.password is not None:
        after["password_changed"] = True
    if before != after:
        roles = after["roles"] or before["roles"]
        audit(
            db,
            principal,
            "user.update",
            object_type="user",
            object_id=user.id,
            organisation_id=roles[0]["organisation_id"] if roles else None,
            before=before,
            after=after,
            remote_addr=remote_addr,
        )
    return user


def change_own(
    db: Session,
    principal: Principal,
    user: User,
    *,
    display_name: str | None = None,
    locale: str | None = None,
    password: str | None = None,
    current_password: str | None = None,
    remote_addr: str | None = None,
) -> User:
    """A user edits their own name, language or password (the password needs the current one)."""
    from server.auth import verify_password

    before = user_snapshot(db, user)
    if password is not None:
        if current_password is None or not verify_password(user.password_hash, current_password):
            raise ForbiddenError("the current password is wrong")
        check_password(password)
        user.password_hash = hash_password(password)
        user.password_changed_at = datetime.now(UTC)
    if display_name is not None:
        user.display_name = display_name
    if locale is not None:
        user.locale = locale
    user.updated_at = datetime.now(UTC)
    db.flush()
    after = user_snapshot(db, user)
    if password is not None:
        after["password_changed"] = True
    roles = after["roles"]
    audit(
        db,
        principal,
        "user.update_self",
        object_type="user",
        object_id=user.id,
        organisation_id=roles[0]["organisation_id"] if roles else None,
        before=before,
        after=after,
        remote_addr=remote_addr,
    )
    return user
