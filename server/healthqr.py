"""Personal QR codes for people without the app, in the unified health-QR v1.1 layout that
stations already accept::

    document number|FULL NAME|date of birth|declaration kind|QID|EXT

The document number is masked except its last six characters, the name is upper-case ASCII, the
day and month of birth are masked (``2003-**-**``) as the national app does by default, the QID
is issued by this server (``SW`` + 8 characters, so it never collides with a national QID) and
is the person's key, and EXT is empty. Also the short lookup codes printed on paper slips.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import date

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Base32 without I, L, O, U: nothing to misread on paper or over the phone."""
QID_PREFIX = "SW"
QID_RE = re.compile(rf"^{QID_PREFIX}[{CROCKFORD}]{{8}}$")
LOOKUP_CODE_CHARS = 10


def ascii_upper(name: str) -> str:
    """``Nguyễn Thị Bình`` -> ``NGUYEN THI BINH`` (how the health QR writes names)."""
    name = name.replace("đ", "d").replace("Đ", "D")
    bare = "".join(c for c in unicodedata.normalize("NFD", name) if not unicodedata.combining(c))
    bare = "".join(c if c.isascii() and c.isprintable() and c != "|" else " " for c in bare)
    return re.sub(r"\s+", " ", bare).strip().upper()


def mask_document(document: str | None) -> str:
    if not document:
        return ""
    document = document.strip()
    keep = 6 if len(document) > 6 else max(len(document) - 2, 0)
    return "*" * (len(document) - keep) + document[len(document) - keep :]


def new_qid() -> str:
    return QID_PREFIX + "".join(secrets.choice(CROCKFORD) for _ in range(8))


def new_lookup_code() -> str:
    return "".join(secrets.choice(CROCKFORD) for _ in range(LOOKUP_CODE_CHARS))


def format_lookup_code(code: str) -> str:
    """``ABCDEFGHJK`` -> ``ABCD-EFGH-JK`` for print."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def normalise_lookup_code(text: str) -> str:
    """What a person typed -> the code: case, spaces and dashes ignored; O read as 0, I/L as 1."""
    text = re.sub(r"[\s\-]+", "", text.upper())
    return text.translate(str.maketrans("OIL", "011"))


@dataclass(frozen=True, slots=True)
class HealthQr:
    document: str
    name: str
    birth_date: str
    kind: int
    qid: str
    ext: str = ""

    def encode(self) -> str:
        return "|".join(
            (self.document, self.name, self.birth_date, str(self.kind), self.qid, self.ext)
        )


def declaration_qr(
    *, name: str, birth_date: date, document: str | None, qid: str, on_behalf: bool
) -> HealthQr:
    """The personal QR of a self-declared person."""
    return HealthQr(
        document=mask_document(document),
        name=ascii_upper(name),
        birth_date=f"{birth_date.year:04d}-**-**",
        kind=1 if on_behalf else 0,
        qid=qid,
    )


def parse_health_qr(text: str) -> HealthQr | None:
    """Read a health QR v1.1 payload (six ``|``-separated fields); None if it is not one."""
    parts = text.split("|")
    if len(parts) != 6 or parts[3] not in ("0", "1") or not parts[4]:
        return None
    if not re.fullmatch(r"\d{4}-(\d{2}|\*\*)-(\d{2}|\*\*)", parts[2]):
        return None
    return HealthQr(parts[0], parts[1], parts[2], int(parts[3]), parts[4], parts[5])
