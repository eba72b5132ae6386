"""Raw SQL for the ingest hot path: a few statements per batch, rows as plain tuples.

SQLAlchemy's compiled statements spend tens of microseconds per row building parameters
(bind processors, type decorators): at thousands of records a second that was most of an
ingest worker's time. Here rows are built once as tuples and handed to the driver as they are:

- PostgreSQL: ``INSERT ... SELECT * FROM unnest(%b::type[], ...)``, one array per column in
  binary format: one short statement that the server plans the same way whatever the batch
  size (a multi-row ``VALUES`` list or a long ``IN (...)`` list is a new statement each time,
  which psycopg re-parses in Python and the server re-plans); ``= ANY(%b)`` for lists of keys.
- SQLite (in-process, so statements are cheap): a multi-row ``VALUES`` list when rows must come
  back (``RETURNING``), else ``executemany``; ``IN (SELECT value FROM json_each(?))`` for keys.

Statements still run on the caller's SQLAlchemy ``Connection`` (``exec_driver_sql``), inside
its transaction, and errors arrive as SQLAlchemy's ``DBAPIError`` family, which ingest's retry
and poison rules rely on.

Values must already be what the column stores: timestamps go through ``Bulk.ts`` (SQLite
keeps SQLAlchemy's text format, PostgreSQL takes aware datetimes), JSON through ``json.dumps``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql

SQLITE_MAX_PARAMS = 32_000
"""Below SQLite's limit of bound parameters per statement (32,766 since 3.32)."""

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
_array_types: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}


def _pg_types(table: Table, columns: Sequence[str]) -> tuple[str, ...]:
    key = (table.name, tuple(columns))
    types = _array_types.get(key)
    if types is None:
        types = tuple(table.c[c].type.compile(dialect=_PG) for c in columns)
        _array_types[key] = types
    return types


class Bulk:
    """Raw statements on one connection (inside the caller's transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self._mark = "%b" if self.pg else "?"

    def ts(self, at: datetime) -> Any:
        """A timestamp as the column stores it (``UtcDateTime``: UTC; on SQLite, as text)."""
        if self.pg:
            return at
        at = at.astimezone(UTC)
        return (
            f"{at.year:04d}-{at.month:02d}-{at.day:02d} "
            f"{at.hour:02d}:{at.minute:02d}:{at.second:02d}.{at.microsecond:06d}"
        )

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` placeholders in the driver's style."""
        return text.replace("?", self._mark) if self.pg else text

    def json_param(self) -> str:
        """A placeholder for a JSON column's value given as text."""
        return "?::json" if self.pg else "?"

    def execute(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement; the rows it returns (if any)."""
        result = self.conn.exec_driver_sql(self.sql(text), tuple(params))
        return [tuple(r) for r in result] if result.returns_rows else []

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> int:
        """One statement for each row; how many rows they changed in all."""
        if not rows:
            return 0
        result = self.conn.exec_driver_sql(self.sql(text), [tuple(r) for r in rows])
        return int(result.rowcount)

    def in_(self, expr: str, values: Sequence[Any], pg_type: str = "text") -> tuple[str, Any]:
        """``expr`` among ``values``, as one SQL condition and its single parameter."""
        if self.pg:
            return f"{expr} = ANY(%b::{pg_type}[])", list(values)
        return f"{expr} IN (SELECT value FROM json_each(?))", json.dumps(list(values))

    def pairs_in(
        self, exprs: tuple[str, str], pairs: Sequence[tuple[Any, Any]], pg_types: tuple[str, str]
    ) -> tuple[str, list[Any]]:
        """``(a, b)`` among ``pairs``, as one SQL condition and its parameters."""
        left = f"({exprs[0]}, {exprs[1]})"
        if self.pg:
            firsts, seconds = [p[0] for p in pairs], [p[1] for p in pairs]
            return (
                f"{left} IN (SELECT * FROM unnest(%b::{pg_types[0]}[], %b::{pg_types[1]}[]))",
                [firsts, seconds],
            )
        return (
            f"{left} IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
            "FROM json_each(?))",
            [json.dumps([list(p) for p in pairs])],
        )

    def insert(
        self,
        table: Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        on_conflict: str = "",
        returning: str = "",
    ) -> list[tuple[Any, ...]]:
        """Insert ``rows`` (tuples in ``columns`` order) in as few statements as possible.

        ``on_conflict`` is the SQL after ``ON CONFLICT`` (both databases speak the same
        upsert); ``returning`` the columns to return, for the rows actually inserted or
        updated. Returns those rows (empty without ``returning``).
        """
        if not rows:
            return []
        cols = ", ".join(columns)
        tail = f" ON CONFLICT {on_conflict}" if on_conflict else ""
        tail += f" RETURNING {returning}" if returning else ""
        if self.pg:
            arrays = ", ".join(f"%b::{t}[]" for t in _pg_types(table, columns))
            text = f"INSERT INTO {table.name} ({cols}) SELECT * FROM unnest({arrays}){tail}"
            params = [list(column) for column in zip(*rows, strict=True)]
            result = self.conn.exec_driver_sql(text, tuple(params))
            return [tuple(r) for r in result] if returning else []
        if not returning:
            marks = ", ".join("?" * len(columns))
            self.executemany(f"INSERT INTO {table.name} ({cols}) VALUES ({marks}){tail}", rows)
            return []
        out: list[tuple[Any, ...]] = []
        per = max(1, SQLITE_MAX_PARAMS // len(columns))
        one = "(" + ", ".join("?" * len(columns)) + ")"
        for i in range(0, len(rows), per):
            chunk = rows[i : i + per]
            values = ", ".join([one] * len(chunk))
            flat = [v for row in chunk for v in row]
            result = self.conn.exec_driver_sql(
                f"INSERT INTO {table.name} ({cols}) VALUES {values}{tail}", tuple(flat)
            )
            out.extend(tuple(r) for r in result)
        return out
