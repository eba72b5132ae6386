"""The audit log: every write through the API or the admin command leaves who, when, what, before
and after, in the same transaction as the write itself."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from server.access import Principal
from server.models import AuditEntry, Base

REDACTED = {"password_hash", "token_hash", "csrf_token"}


def snapshot(obj: Base | None) -> dict[str, Any] | None:
    """A JSON-ready copy of a row's columns (secrets left out), for ``before``/``after``."""
    if obj is None:
        return None
    out: dict[str, Any] = {}
    for attr in inspect(obj).mapper.column_attrs:
        if attr.key in REDACTED:
            continue
        out[attr.key] = _json(getattr(obj, attr.key))
    return out


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def audit(
    session: Session,
    principal: Principal,
    action: str,
    *,
    object_type: str,
    object_id: object,
    organisation_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    remote_addr: str | None = None,
) -> AuditEntry:
    """Add an audit entry to ``session`` (committed with the write it describes)."""
    entry = AuditEntry(
        at=datetime.now(UTC),
        user_id=principal.user_id,
        actor=principal.actor[:100],
        action=action,
        object_type=object_type,
        object_id=str(object_id)[:64],
        organisation_id=organisation_id,
        before=before,
        after=after,
        remote_addr=remote_addr,
    )
    session.add(entry)
    return entry
