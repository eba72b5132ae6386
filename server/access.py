"""Who may do what, where: roles, permissions and scopes over the organisation tree.

A user holds roles at organisation nodes (``user_roles``). A role grants permissions; a grant at
a node covers the node and everything below it (its materialised ``path`` is a prefix of
theirs). The **scope** of a caller for a permission is the union of the subtrees of the grants
whose role has that permission. Every query that returns or changes data filters through
``Scope``; objects outside the scope are reported as not found, never as forbidden, so that a
user cannot learn what exists elsewhere.

Objects that belong to no facility yet (stations that published before anyone registered them,
their tubes) are visible only to callers scoped at a root node (a province).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, false, or_, select, true
from sqlalchemy.orm import Session

from server.errors import ForbiddenError
from server.models import Organisation, Role, UserRole


class Permission(enum.StrEnum):
    ORG_READ = "org.read"
    ORG_WRITE = "org.write"
    USER_READ = "user.read"
    USER_WRITE = "user.write"
    STATION_READ = "station.read"
    STATION_WRITE = "station.write"
    DATA_READ = "data.read"
    """Persons, tubes, pools, samples and the raw records (personal data)."""
    RESULT_WRITE = "result.write"
    LAB_WRITE = "lab.write"
    """Lab reception: batches shipped and received."""
    FLEET_OPERATE = "fleet.operate"
    """Remote commands to stations."""
    AUDIT_READ = "audit.read"


P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.PROVINCIAL_ADMIN: frozenset(Permission),
    Role.FACILITY_MANAGER: frozenset(
        {P.ORG_READ, P.USER_READ, P.USER_WRITE, P.STATION_READ, P.STATION_WRITE, P.DATA_READ}
        | {P.AUDIT_READ}
    ),
    Role.SAMPLING_STAFF: frozenset({P.ORG_READ, P.STATION_READ, P.DATA_READ}),
    Role.LAB_STAFF: frozenset({P.ORG_READ, P.DATA_READ, P.RESULT_WRITE, P.LAB_WRITE}),
    Role.OPS: frozenset({P.ORG_READ, P.STATION_READ, P.FLEET_OPERATE}),
    Role.TECHNICIAN: frozenset({P.ORG_READ, P.STATION_READ, P.STATION_WRITE}),
}
"""Ops and technicians see the fleet but no personal data."""

GRANTABLE_BY: dict[Role, frozenset[Role]] = {
    Role.PROVINCIAL_ADMIN: frozenset(Role),
    Role.FACILITY_MANAGER: frozenset(Role) - {Role.PROVINCIAL_ADMIN},
}
"""Which roles a holder of ``USER_WRITE`` through each role may grant (within their scope)."""


@dataclass(frozen=True, slots=True)
class Grant:
    role: Role
    organisation_id: int
    path: str
    root: bool


@dataclass(frozen=True, slots=True)
class Scope:
    """The organisation subtrees a caller may act on for one permission."""

    paths: tuple[str, ...] = ()
    includes_unassigned: bool = False

    @property
    def empty(self) -> bool:
        return not self.paths

    def covers_path(self, path: str | None) -> bool:
        """Whether an object at organisation ``path`` (None: unassigned) is in scope."""
        if path is None:
            return self.includes_unassigned
        return any(path.startswith(p) for p in self.paths)

    def org_ids(self) -> Select[int]:
        """The ids of every organisation in scope, as a subquery."""
        if not self.paths:
            return select(Organisation.id).where(false())
        return select(Organisation.id).where(
            or_(*(Organisation.path.startswith(p, autoescape=True) for p in _minimal(self.paths)))
        )

    def filter(self, column: Any) -> ColumnElement[bool]:
        """A WHERE clause: ``column`` (an organisation id, maybe NULL) is in scope."""
        if not self.paths:
            return false()
        clause: ColumnElement[bool] = column.in_(self.org_ids())
        return or_(clause, column.is_(None)) if self.includes_unassigned else clause

    def filter_any(self, *columns: Any) -> ColumnElement[bool]:
        """A WHERE clause: any of ``columns`` is in scope (a tube's facility or its lab)."""
        if not self.paths:
            return false()
        ids = self.org_ids()
        clauses: list[ColumnElement[bool]] = [c.in_(ids) for c in columns]
        if self.includes_unassigned:
            clauses.append(columns[0].is_(None))
        return or_(*clauses) if clauses else true()


def _minimal(paths: Iterable[str]) -> list[str]:
    """Drop paths already covered by a shorter one."""
    out: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p.startswith(q) for q in out):
            out.append(p)
    return out


@dataclass(frozen=True)
class Principal:
    """The caller of a request: a user, their grants, and how they authenticated."""

    user_id: int | None
    username: str
    grants: tuple[Grant, ...] = ()
    via: str = "session"
    """``session`` (cookie), ``token`` (bearer) or ``cli``."""
    token_id: int | None = None
    csrf_token: str | None = None
    _scopes: dict[Permission, Scope] = field(default_factory=dict, compare=False, repr=False)

    @property
    def actor(self) -> str:
        return self.username

    def roles(self) -> set[Role]:
        return {g.role for g in self.grants}

    def can(self, permission: Permission) -> bool:
        return any(permission in ROLE_PERMISSIONS[g.role] for g in self.grants)

    def scope(self, permission: Permission) -> Scope:
        """The caller's scope for ``permission`` (empty if no role grants it)."""
        cached = self._scopes.get(permission)
        if cached is None:
            grants = [g for g in self.grants if permission in ROLE_PERMISSIONS[g.role]]
            cached = Scope(
                paths=tuple(_minimal(g.path for g in grants)),
                includes_unassigned=any(g.root for g in grants),
            )
            self._scopes[permission] = cached
        return cached

    def require(self, permission: Permission) -> Scope:
        """The scope for ``permission``; ``ForbiddenError`` if no role of the caller grants it."""
        if not self.can(permission):
            raise ForbiddenError(f"your roles do not allow {permission.value}")
        return self.scope(permission)

    def grantable_roles(self, org_path: str) -> set[Role]:
        """Roles this caller may grant at the node with ``org_path``."""
        out: set[Role] = set()
        for g in self.grants:
            if P.USER_WRITE in ROLE_PERMISSIONS[g.role] and org_path.startswith(g.path):
                out |= GRANTABLE_BY.get(g.role, frozenset())
        return out


def load_grants(session: Session, user_id: int) -> tuple[Grant, ...]:
    """The grants of a user, at active organisations only."""
    rows = session.execute(
        select(UserRole.role, Organisation.id, Organisation.path, Organisation.parent_id)
        .join(Organisation, Organisation.id == UserRole.organisation_id)
        .where(UserRole.user_id == user_id, Organisation.active.is_(True))
        .order_by(UserRole.id)
    ).all()
    return tuple(
        Grant(role=Role(role), organisation_id=oid, path=path, root=parent is None)
        for role, oid, path, parent in rows
    )


def system_principal(actor: str) -> Principal:
    """The principal of command-line administration: every permission, everywhere."""
    return Principal(
        user_id=None,
        username=actor,
        grants=(Grant(Role.PROVINCIAL_ADMIN, 0, "/", True),),
        via="cli",
    )
