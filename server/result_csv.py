"""Reading a lab's CSV export of results: decoding, column mapping, per-row validation.

Pure: bytes in, a ``ParsedFile`` out (every row with its status and reason); nothing here touches
the database. ``server/results.py`` checks the rows against the tubes and applies a file only
when every row is valid, in one transaction.

What a lab's export looks like varies (column names in Vietnamese or English, with or without
diacritics, ``,`` ``;`` or tab separated, UTF-8 with or without a BOM): columns are matched by
known aliases unless the uploader maps them by hand.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

FIELDS = ("tube", "result", "reported_at", "test_kind")
"""The logical columns; ``tube`` and ``result`` are required."""
REQUIRED = ("tube", "result")
MAX_ROWS = 50_000


def fold(text: str) -> str:
    """Lower case, without diacritics (``đ`` -> ``d``), single spaces: how names are compared."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[\s_\-.:/]+", " ", bare).strip().lower()


ALIASES: dict[str, tuple[str, ...]] = {
    "tube": (
        "tube",
        "tube code",
        "tube id",
        "barcode",
        "sample",
        "sample id",
        "sample code",
        "ma ong",
        "ma ong nghiem",
        "ma mau",
        "ma so mau",
        "ma xet nghiem",
    ),
    "result": ("result", "outcome", "ket qua", "ket qua xet nghiem", "kq"),
    "reported_at": (
        "reported at",
        "result date",
        "result time",
        "date",
        "ngay tra ket qua",
        "ngay ket qua",
        "thoi gian tra ket qua",
        "ngay xet nghiem",
    ),
    "test_kind": ("test kind", "test", "method", "loai xet nghiem", "phuong phap"),
}

RESULT_WORDS: dict[str, str] = {
    **dict.fromkeys(
        ("negative", "neg", "am tinh", "am", "-", "not detected", "khong phat hien"), "negative"
    ),
    **dict.fromkeys(
        ("positive", "pos", "duong tinh", "duong", "+", "detected", "phat hien"), "positive"
    ),
    **dict.fromkeys(
        ("invalid", "inconclusive", "khong xac dinh", "loi", "error", "khong hop le"), "invalid"
    ),
}

TEST_KIND_WORDS: dict[str, str] = {
    **dict.fromkeys(("rt pcr", "rtpcr", "pcr", "rt_pcr"), "rt_pcr"),
    **dict.fromkeys(
        ("rapid antigen", "rapid", "antigen", "test nhanh", "khang nguyen", "rapid_antigen"),
        "rapid_antigen",
    ),
}

_DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d-%m-%Y %H:%M",
    "%d-%m-%Y",
)


class RowStatus(StrEnum):
    NEW = "new"
    """Valid; a result will be recorded."""
    UNCHANGED = "unchanged"
    """Valid; the tube already has this very result (a re-import): nothing to do."""
    ERROR = "error"
    BLANK = "blank"
    """An empty line, skipped."""


@dataclass(frozen=True)
class Problem:
    """An error as a code (``import.err.<code>`` in the text catalogue) and its values."""

    code: str
    params: dict[str, str]


@dataclass
class Row:
    """One data line of the file, as read and as judged."""

    line: int
    """1-based line number in the file (the header is line 1)."""
    tube: str = ""
    result: str | None = None
    reported_at: datetime | None = None
    test_kind: str | None = None
    raw: dict[str, str] = field(default_factory=dict)
    status: RowStatus = RowStatus.NEW
    errors: list[str] = field(default_factory=list)

    problems: list[Problem] = field(default_factory=list)
    """The same errors as codes and values, for the interface language."""

    def fail(self, code: str, text: str, **params: object) -> None:
        """Mark the row in error: ``text`` in English, ``code`` + ``params`` for translation."""
        self.status = RowStatus.ERROR
        self.errors.append(text)
        self.problems.append(Problem(code, {k: str(v) for k, v in params.items()}))


@dataclass
class ParsedFile:
    """A decoded file: its columns, the mapping used, every row, and file-level errors."""

    columns: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    delimiter: str = ","
    had_bom: bool = False
    problems: list[Problem] = field(default_factory=list)

    def fail(self, code: str, text: str, **params: object) -> None:
        """A file-level error: ``text`` in English, ``code`` + ``params`` for translation."""
        self.errors.append(text)
        self.problems.append(Problem(code, {k: str(v) for k, v in params.items()}))

    @property
    def ok(self) -> bool:
        return not self.errors and all(r.status is not RowStatus.ERROR for r in self.rows)

    def count(self, status: RowStatus) -> int:
        return sum(1 for r in self.rows if r.status is status)


def guess_mapping(columns: list[str]) -> dict[str, str]:
    """Match columns to logical fields by their aliases (first match wins)."""
    folded = {fold(c): c for c in reversed(columns)}
    out: dict[str, str] = {}
    for name, aliases in ALIASES.items():
        for alias in aliases:
            if alias in folded and folded[alias] not in out.values():
                out[name] = folded[alias]
                break
    return out


def parse_results_csv(
    data: bytes,
    *,
    mapping: Mapping[str, str] | None = None,
    tz: ZoneInfo,
    default_reported_at: datetime | None = None,
) -> ParsedFile:
    """Decode and validate a CSV export; never raises for bad input.

    Args:
        data: the file as uploaded.
        mapping: logical field -> column name; fields left out are guessed from the aliases.
        tz: how dates without a zone in the file are read (the lab's local time).
        default_reported_at: when the file has no date column (aware; defaults to now).
    """
    out = ParsedFile()
    out.had_bom = data.startswith(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        out.fail(
            "not_utf8",
            f"the file is not UTF-8 text (line {line}, byte {exc.start + 1}): "
            "export it as 'CSV UTF-8'",
            line=line,
            byte=exc.start + 1,
        )
        return out
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        out.fail("empty", "the file is empty")
        return out
    header_line = text.split("\n", 1)[0]
    out.delimiter = max(",;\t", key=header_line.count)
    reader = csv.reader(io.StringIO(text), delimiter=out.delimiter, strict=False)
    try:
        header = next(reader)
    except csv.Error as exc:
        out.fail("header", f"the header line cannot be read: {exc}", error=exc)
        return out
    out.columns = [c.strip() for c in header]
    dupes = sorted({c for c in out.columns if c and out.columns.count(c) > 1})
    if dupes:
        out.fail(
            "dup_columns",
            f"columns appear more than once: {', '.join(dupes)}",
            columns=", ".join(dupes),
        )
    chosen = dict(guess_mapping(out.columns))
    for name, column in (mapping or {}).items():
        if name not in FIELDS:
            out.fail("unknown_field", f"unknown field {name!r} in the column mapping", name=name)
        elif column:
            chosen[name] = column
        else:
            chosen.pop(name, None)
    out.mapping = chosen
    for name, column in chosen.items():
        if column not in out.columns:
            out.fail(
                "missing_column",
                f"column {column!r} (for {name}) is not in the file",
                column=column,
                field=name,
            )
    missing = [name for name in REQUIRED if name not in chosen]
    if missing:
        found = ", ".join(repr(c) for c in out.columns) or "none"
        out.fail(
            "no_column",
            f"no column for {' and '.join(missing)}: columns found: {found}; "
            "choose the columns by hand",
            fields=" + ".join(missing),
            found=found,
        )
    if out.errors:
        return out
    index = {c: i for i, c in enumerate(out.columns)}
    fallback = default_reported_at or datetime.now(UTC)
    first_line: dict[str, int] = {}
    line = 1
    try:
        for values in reader:
            line = reader.line_num
            if len(out.rows) >= MAX_ROWS:
                out.fail(
                    "too_many_rows", f"more than {MAX_ROWS} rows: split the file", max=MAX_ROWS
                )
                break
            row = Row(line=line, raw=dict(zip(out.columns, values, strict=False)))
            out.rows.append(row)
            if not any(v.strip() for v in values):
                row.status = RowStatus.BLANK
                continue
            if len(values) != len(out.columns):
                row.fail(
                    "field_count",
                    f"{len(values)} fields where the header has {len(out.columns)}",
                    got=len(values),
                    want=len(out.columns),
                )
                continue
            _read_row(row, values, index, chosen, tz, fallback)
            if row.tube:
                key = row.tube.upper()
                if key in first_line:
                    row.fail(
                        "duplicate",
                        f"tube {row.tube} already appears on line {first_line[key]}",
                        tube=row.tube,
                        line=first_line[key],
                    )
                else:
                    first_line[key] = line
    except csv.Error as exc:
        out.fail("line_unreadable", f"line {line + 1} cannot be read: {exc}", line=line + 1)
    if not any(r.status is not RowStatus.BLANK for r in out.rows) and not out.errors:
        out.fail("no_rows", "the file has a header but no data rows")
    return out


def _read_row(
    row: Row,
    values: list[str],
    index: dict[str, int],
    mapping: dict[str, str],
    tz: ZoneInfo,
    fallback: datetime,
) -> None:
    def get(name: str) -> str:
        column = mapping.get(name)
        return values[index[column]].strip() if column is not None else ""

    row.tube = get("tube")
    if not row.tube:
        row.fail("no_tube", "no tube code")
    elif len(row.tube) > 64 or not row.tube.isprintable():
        row.fail("bad_tube", "the tube code is not a valid code (printable, at most 64 characters)")
    raw_result = get("result")
    row.result = RESULT_WORDS.get(raw_result if raw_result in "+-" else fold(raw_result))
    if not raw_result:
        row.fail("no_result", "no result")
    elif row.result is None:
        row.fail(
            "bad_result",
            f"result {raw_result!r} is not one of positive, negative, invalid",
            value=raw_result,
        )
    raw_date = get("reported_at")
    if raw_date:
        parsed = parse_local_datetime(raw_date, tz)
        if parsed is None:
            row.fail(
                "bad_date",
                f"date {raw_date!r} is not YYYY-MM-DD[ HH:MM] or DD/MM/YYYY[ HH:MM]",
                value=raw_date,
            )
        else:
            row.reported_at = parsed
    else:
        row.reported_at = fallback
    raw_kind = get("test_kind")
    if raw_kind:
        row.test_kind = TEST_KIND_WORDS.get(fold(raw_kind))
        if row.test_kind is None:
            row.fail(
                "bad_kind", f"test kind {raw_kind!r} is not RT-PCR or rapid antigen", value=raw_kind
            )


def parse_local_datetime(text: str, tz: ZoneInfo) -> datetime | None:
    """Parse a date or date-time as written by a lab (local time unless it has a zone)."""
    text = text.strip()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
        for fmt in _DATE_FORMATS:
            try:
                value = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)
