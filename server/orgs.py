"""The organisation tree: province -> districts -> facilities.

Shared by the API and ``swabline admin import-orgs``. Every change is audited by the caller's
principal; placement rules:

- a province has no parent; a district's parent is a province; a facility's parent is a
  district or a province;
- a facility has a ``facility_kind`` (sampling, lab or both); other nodes have none;
- a node is deactivated only when its children are; a deactivated node grants nothing.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.access import Permission, Principal
from server.audit import audit, snapshot
from server.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    ImportRowsError,
    NotFoundError,
)
from server.models import FacilityKind, Organisation, OrgKind

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
_CODE = re.compile(CODE_PATTERN)
PARENT_KINDS: dict[OrgKind, set[OrgKind]] = {
    OrgKind.PROVINCE: set(),
    OrgKind.DISTRICT: {OrgKind.PROVINCE},
    OrgKind.FACILITY: {OrgKind.DISTRICT, OrgKind.PROVINCE},
}


def check_placement(kind: OrgKind, facility_kind: str | None, parent: Organisation | None) -> None:
    """Raise ``BadRequestError`` unless a ``kind`` node may sit under ``parent``."""
    allowed = PARENT_KINDS[kind]
    if parent is None and allowed:
        raise BadRequestError(f"a {kind.value} needs a parent ({' or '.join(sorted(allowed))})")
    if parent is not None and OrgKind(parent.kind) not in allowed:
        raise BadRequestError(f"a {kind.value} cannot be placed under a {parent.kind}")
    if kind is OrgKind.FACILITY and facility_kind not in {k.value for k in FacilityKind}:
        raise BadRequestError("a facility needs facility_kind: sampling, lab or both")
    if kind is not OrgKind.FACILITY and facility_kind is not None:
        raise BadRequestError(f"a {kind.value} has no facility_kind")
    if parent is not None and not parent.active:
        raise ConflictError(f"the parent {parent.code!r} is deactivated")


def get_in_scope(db: Session, principal: Principal, org_id: int, perm: Permission) -> Organisation:
    """The organisation ``org_id`` if it is in the caller's scope for ``perm``, else 404."""
    scope = principal.require(perm)
    org = db.get(Organisation, org_id)
    if org is None or not scope.covers_path(org.path):
        raise NotFoundError(f"no organisation {org_id}")
    return org


def create(
    db: Session,
    principal: Principal,
    *,
    code: str,
    name: str,
    kind: OrgKind,
    parent: Organisation | None,
    facility_kind: str | None,
    remote_addr: str | None = None,
) -> Organisation:
    scope = principal.require(Permission.ORG_WRITE)
    if parent is None:
        if not scope.covers_path("/"):
            raise ForbiddenError("only a server administrator (swabline admin) adds provinces")
    elif not scope.covers_path(parent.path):
        raise NotFoundError(f"no organisation {parent.id}")
    check_placement(kind, facility_kind, parent)
    if not _CODE.match(code):
        raise BadRequestError(f"code {code!r}: letters, digits, '.', '_', '-'; at most 32")
    if db.scalar(select(Organisation.id).where(Organisation.code == code)) is not None:
        raise ConflictError(f"an organisation with code {code!r} exists")
    now = datetime.now(UTC)
    org = Organisation(
        parent_id=parent.id if parent else None,
        kind=kind.value,
        facility_kind=facility_kind,
        code=code,
        name=name,
        path="",
        active=True,
        created_at=now,
        updated_at=now,
    )
    db.add(org)
    db.flush()
    org.path = f"{parent.path if parent else '/'}{org.id}/"
    db.flush()
    audit(
        db,
        principal,
        "organisation.create",
        object_type="organisation",
        object_id=org.id,
        organisation_id=org.id,
        before=None,
        after=snapshot(org),
        remote_addr=remote_addr,
    )
    return org


@dataclass(frozen=True)
class OrgChange:
    name: str | None = None
    facility_kind: str | None = None
    parent: Organisation | None = None
    active: bool | None = None


def change(
    db: Session,
    principal: Principal,
    org: Organisation,
    edit: OrgChange,
    *,
    remote_addr: str | None = None,
) -> Organisation:
    """Rename, re-kind, move or (de)activate ``org`` (already checked to be in scope)."""
    scope = principal.require(Permission.ORG_WRITE)
    if not scope.covers_path(org.path):
        raise NotFoundError(f"no organisation {org.id}")
    before = snapshot(org)
    kind = OrgKind(org.kind)
    moving = edit.parent is not None and edit.parent.id != org.parent_id
    rekind = edit.facility_kind is not None and edit.facility_kind != org.facility_kind
    if moving or rekind:
        parent = edit.parent if edit.parent is not None else _parent(db, org)
        if moving and parent is not None:
            if not scope.covers_path(parent.path):
                raise NotFoundError(f"no organisation {parent.id}")
            if parent.path.startswith(org.path):
                raise BadRequestError("an organisation cannot move under itself")
        check_placement(kind, edit.facility_kind or org.facility_kind, parent)
    if moving and edit.parent is not None:
        old, new = org.path, f"{edit.parent.path}{org.id}/"
        db.execute(
            update(Organisation)
            .where(Organisation.path.startswith(old, autoescape=True))
            .values(path=new + func.substr(Organisation.path, len(old) + 1))
            .execution_options(synchronize_session=False)
        )
        db.refresh(org)
        org.parent_id = edit.parent.id
    if edit.name is not None:
        org.name = edit.name
    if rekind:
        org.facility_kind = edit.facility_kind
    if edit.active is not None and edit.active != org.active:
        if not edit.active:
            children = db.scalar(
                select(func.count())
                .select_from(Organisation)
                .where(Organisation.parent_id == org.id, Organisation.active.is_(True))
            )
            if children:
                raise ConflictError(
                    f"{org.code!r} has {children} active children: deactivate them first"
                )
        elif org.parent_id is not None:
            parent = db.get(Organisation, org.parent_id)
            if parent is not None and not parent.active:
                raise ConflictError(f"the parent {parent.code!r} is deactivated")
        org.active = edit.active
    org.updated_at = datetime.now(UTC)
    db.flush()
    after = snapshot(org)
    if before != after:
        audit(
            db,
            principal,
            "organisation.update",
            object_type="organisation",
            object_id=org.id,
            organisation_id=org.id,
            before=before,
            after=after,
            remote_addr=remote_addr,
        )
    return org


def _parent(db: Session, org: Organisation) -> Organisation | None:
    return db.get(Organisation, org.parent_id) if org.parent_id is not None else None


# --- CSV import ------------------------------------------------------------------------------

CSV_COLUMNS = ("code", "name", "kind", "parent_code", "facility_kind")


@dataclass(frozen=True)
class ImportReport:
    created: int
    updated: int
    unchanged: int


def _rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    return header, rows


def import_csv(db: Session, principal: Principal, text: str) -> ImportReport:
    """Import the organisation tree from CSV; all or nothing.

    Columns: ``code,name,kind,parent_code,facility_kind`` (header required; UTF-8, BOM allowed).
    A parent may be defined further down the file or already exist. An existing code is updated
    (name, facility kind, parent); importing the same file again changes nothing. Raises
    ``ImportRowsError`` listing every bad row; the caller rolls back.
    """
    header, rows = _rows(text)
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ImportRowsError([f"header: missing column(s) {', '.join(missing)}"])
    errors: list[str] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        code = row.get("code", "")
        if not _CODE.match(code):
            errors.append(f"row {n}: code {code!r} is not a valid code")
        elif code in seen:
            errors.append(f"row {n}: code {code!r} repeats row {seen[code]}")
        else:
            seen[code] = n
        if not row.get("name"):
            errors.append(f"row {n}: name is empty")
        elif len(row["name"]) > 200:
            errors.append(f"row {n}: name is longer than 200 characters")
        if row.get("kind") not in {k.value for k in OrgKind}:
            errors.append(
                f"row {n}: kind {row.get('kind')!r} is not province, district or facility"
            )
    if errors:
        raise ImportRowsError(errors)
    existing = {o.code: o for o in db.scalars(select(Organisation))}
    pending = {row["code"]: (n, row) for n, row in enumerate(rows, start=2)}
    created = updated = unchanged = 0
    done: set[str] = set()

    def place(code: str, chain: tuple[str, ...] = ()) -> None:
        nonlocal created, updated, unchanged
        if code in done:
            return
        n, row = pending[code]
        if code in chain:
            errors.append(f"row {n}: parent cycle {' -> '.join((*chain, code))}")
            return
        parent_code = row["parent_code"] or None
        parent: Organisation | None = None
        if parent_code is not None:
            if parent_code in pending:
                place(parent_code, (*chain, code))
            parent = existing.get(parent_code)
            if parent is None:
                if parent_code not in pending:
                    errors.append(f"row {n}: parent_code {parent_code!r} does not exist")
                return
        kind = OrgKind(row["kind"])
        facility_kind = row["facility_kind"] or None
        done.add(code)
        try:
            org = existing.get(code)
            if org is None:
                org = create(
                    db,
                    principal,
                    code=code,
                    name=row["name"],
                    kind=kind,
                    parent=parent,
                    facility_kind=facility_kind,
                )
                existing[code] = org
                created += 1
                return
            if org.kind != kind.value:
                errors.append(f"row {n}: {code!r} exists as a {org.kind}, not a {kind.value}")
                return
            same = (
                org.name == row["name"]
                and org.facility_kind == facility_kind
                and org.parent_id == (parent.id if parent else None)
            )
            if same:
                unchanged += 1
                return
            if parent is None and org.parent_id is not None:
                errors.append(f"row {n}: {code!r} cannot become a root")
                return
            check_placement(kind, facility_kind, parent)
            change(
                db,
                principal,
                org,
                OrgChange(name=row["name"], facility_kind=facility_kind, parent=parent),
            )
            updated += 1
        except (BadRequestError, ConflictError, ForbiddenError, NotFoundError) as exc:
            errors.append(f"row {n}: {exc.message}")

    for code in pending:
        place(code)
    if errors:
        raise ImportRowsError(errors)
    return ImportReport(created, updated, unchanged)
