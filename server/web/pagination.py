"""Page-numbered results for search endpoints (``Page[T]``: items, total, page, page_size)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from server.web.schemas import Page

M = TypeVar("M", bound=BaseModel)


def paginate(
    db: Session,
    stmt: Select[*tuple[Any, ...]],
    page: int,
    page_size: int,
    model: type[M],
    *,
    convert: Callable[[Any], M] | None = None,
) -> Page[M]:
    """Run ``stmt`` (already ordered) for one page; ``total`` counts every match."""
    total = db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    result = db.execute(stmt.offset((page - 1) * page_size).limit(page_size))
    rows = result.scalars().all() if convert is None else result.all()
    items = [model.model_validate(r) if convert is None else convert(r) for r in rows]
    return Page[model](items=items, total=total, page=page, page_size=page_size)  # type: ignore[valid-type]
