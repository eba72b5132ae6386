"""Files that people open in a spreadsheet (Excel, LibreOffice, Google Sheets): the CSV and XLSX
downloads. Text from people (names, addresses, organisation and station names) must stay text:
a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula when the file is opened ("CSV injection", OWASP), and ``=HYPERLINK(...)`` in a
self-declared name would send the recall list's data elsewhere.

- CSV: such a cell gets a leading apostrophe, which spreadsheets take as "this is text" and do
  not show (a plain-text reader sees it).
- XLSX: such a cell is stored with the string type, which no spreadsheet evaluates (openpyxl
  would otherwise store a text starting with ``=`` as a formula).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from openpyxl.worksheet.worksheet import Worksheet

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value`` for a CSV cell: text that would start a formula gets a leading apostrophe;
    numbers, dates and other text are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_bytes(rows: Iterable[Sequence[object]]) -> bytes:
    """Rows as CSV for Excel: UTF-8 with a BOM (so the Vietnamese text shows), CRLF line ends,
    every cell through ``safe_cell``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return ("\ufeff" + buf.getvalue()).encode()


def append_row(ws: Worksheet, values: Sequence[object]) -> None:
    """Append a row to an XLSX sheet; a text is stored as text, never as a formula."""
    ws.append(list(values))
    for cell in ws[ws.max_row]:
        if cell.data_type == "f":
            cell.data_type = "s"
