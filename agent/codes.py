"""One parser for everything staff scan at a station. Pure: no I/O, never raises on input.

``classify(text, rules)`` turns a scanned text into one of:

- ``PersonCode``: a CCCD (chip-based citizen ID card) QR or a unified personal health QR v1.1,
  with the person as ``protocol.events.Person``;
- ``TubeCode``: a sample tube barcode, matched against the deployment's patterns (none built in);
- ``CommandCode``: a printed command card or staff badge (``SWABLINE:CMD:...``,
  ``SWABLINE:STAFF:...``);
- ``RejectedCode``: anything else, with a short reason that never quotes personal data.

Formats are described in ``docs/workflow.md``; the card texts are built by ``card_text`` so the
printed sheet and the parser cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from protocol.events import Mode, Person, ResultValue, TestKind

MAX_CODE_BYTES = 4096
"""Longer scans are refused before any parsing."""
MAX_TUBE_CHARS = 64
"""A tube id is stored as the key of its pool; longer barcodes are refused."""
CARD_PREFIX = "SWABLINE:"
"""Every command card and staff badge starts with this (case-insensitive)."""

PersonFormat = Literal["cccd", "health_qr"]
PERSON_FORMATS: tuple[PersonFormat, ...] = get_args(PersonFormat)

# Province and city codes that open a CCCD number: appendix 1 of Circular 07/2016/TT-BCA (the
# place where the birth was registered). Citizens whose birth was registered abroad carry a country
# code instead; stations that see them turn ``cccd_strict_province`` off.
_PROVINCES = (
    "001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033 034 "
    "035 036 037 038 040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066 067 068 "
    "070 072 074 075 077 079 080 082 083 084 086 087 089 091 092 093 094 095 096"
)
PROVINCE_CODES = frozenset(_PROVINCES.split(" "))

_STAFF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_QID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DOCUMENT = re.compile(r"\**[A-Za-z0-9]*")
_HEALTH_DOB = re.compile(r"(\d{4})-(\d{2}|\*\*)-(\d{2}|\*\*)")
_DDMMYYYY = re.compile(r"\d{8}")
_MAX_NAME = 200
_MAX_ADDRESS = 300
_MAX_EXT = 1000

CommandName = Literal["close", "undo", "test_kind", "pool_size", "mode", "result", "sign_in"]


@dataclass(frozen=True, slots=True)
class CodeRules:
    """How a deployment classifies codes (built from ``[workflow]`` in the station config).

    Args:
        tube_patterns: regular expressions a whole tube barcode must match (``re.fullmatch``).
        person_formats: which person QR formats the station accepts.
        cccd_strict_province: refuse CCCD numbers whose first three digits are not a Vietnamese
            province code (turn off where citizens registered abroad are sampled).
    """

    tube_patterns: tuple[re.Pattern[str], ...] = ()
    person_formats: frozenset[PersonFormat] = frozenset(PERSON_FORMATS)
    cccd_strict_province: bool = True

    @classmethod
    def build(
        cls,
        tube_patterns: Iterable[str] = (),
        person_formats: Iterable[PersonFormat] = PERSON_FORMATS,
        *,
        cccd_strict_province: bool = True,
    ) -> CodeRules:
        """Compile ``tube_patterns`` (``re.error`` for a bad one)."""
        return cls(
            tube_patterns=tuple(re.compile(p) for p in tube_patterns),
            person_formats=frozenset(person_formats),
            cccd_strict_province=cccd_strict_province,
        )


@dataclass(frozen=True, slots=True)
class PersonCode:
    """A person's QR. ``extra_fields``: fields after the seventh of newer CCCD cards (ignored)."""

    format: PersonFormat
    person: Person
    extra_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TubeCode:
    tube: str
    pattern: str


@dataclass(frozen=True, slots=True)
class CommandCode:
    """A command card or a staff badge; only the fields of its ``command`` are set."""

    command: CommandName
    test_kind: TestKind | None = None
    pool_size: int | None = None
    mode: Mode | None = None
    result: ResultValue | None = None
    staff_id: str | None = None
    staff_name: str | None = None


@dataclass(frozen=True, slots=True)
class RejectedCode:
    reason: str


Code = PersonCode | TubeCode | CommandCode | RejectedCode


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def classify(text: str, rules: CodeRules, *, lossy: bool = False) -> Code:
    """Classify one scanned text. ``lossy``: it came from a keyboard-mode scanner.

    Never raises for any input; everything unusable becomes a ``RejectedCode``.
    """
    try:
        clean = _sanitize(text)
        if clean[: len(CARD_PREFIX)].upper() == CARD_PREFIX:
            return _card(clean[len(CARD_PREFIX) :], lossy=lossy)
        if "|" in clean:
            person = _person(clean, rules, lossy=lossy)
            if person is not None:
                return person
        for pattern in rules.tube_patterns:
            if pattern.fullmatch(clean):
                if len(clean) > MAX_TUBE_CHARS:
                    raise _Reject(f"tube code longer than {MAX_TUBE_CHARS} characters")
                return TubeCode(tube=clean, pattern=pattern.pattern)
        raise _Reject("unknown code format")
    except _Reject as exc:
        return RejectedCode(exc.reason)
    except ValueError as exc:  # a model refused a value the checks above let through
        return RejectedCode(f"malformed code ({type(exc).__name__})")


def describe(code: Code) -> dict[str, object]:
    """How a station sees ``code``, as one JSON-ready object (``swabline inspect-code``)."""
    match code:
        case RejectedCode(reason=reason):
            return {"accepted": False, "reason": reason}
        case PersonCode():
            return {
                "accepted": True,
                "kind": "person",
                "format": code.format,
                "person": code.person.model_dump(mode="json", exclude_none=True),
                "extra_fields": len(code.extra_fields),
            }
        case TubeCode():
            return {"accepted": True, "kind": "tube", "tube": code.tube, "pattern": code.pattern}
        case CommandCode():
            out: dict[str, object] = {"accepted": True, "kind": "command"}
            for name in CommandCode.__slots__:
                value = getattr(code, name)
                if value is not None:
                    out[name] = value
            return out
    raise TypeError(f"not a code: {code!r}")  # pragma: no cover - exhaustive match above


# --- command cards ---------------------------------------------------------------------------

_TEST_KINDS: dict[str, TestKind] = {"RT_PCR": "rt_pcr", "RAPID_ANTIGEN": "rapid_antigen"}
_MODES: dict[str, Mode] = {"POOL": "pool", "SINGLE": "single"}
_RESULTS: dict[str, ResultValue] = {
    "POSITIVE": "positive",
    "NEGATIVE": "negative",
    "INVALID": "invalid",
}


def card_text(card: CommandCode) -> str:
    """The text printed in the QR of ``card`` (the inverse of ``classify``)."""
    match card.command:
        case "close":
            return f"{CARD_PREFIX}CMD:CLOSE"
        case "undo":
            return f"{CARD_PREFIX}CMD:UNDO"
        case "test_kind" if card.test_kind:
            return f"{CARD_PREFIX}CMD:TEST:{card.test_kind.upper()}"
        case "pool_size" if card.pool_size:
            return f"{CARD_PREFIX}CMD:POOL:{card.pool_size}"
        case "mode" if card.mode:
            return f"{CARD_PREFIX}CMD:MODE:{card.mode.upper()}"
        case "result" if card.result:
            return f"{CARD_PREFIX}CMD:RESULT:{card.result.upper()}"
        case "sign_in" if card.staff_id:
            name = f":{card.staff_name}" if card.staff_name else ""
            return f"{CARD_PREFIX}STAFF:{card.staff_id}{name}"
    raise ValueError(f"incomplete card: {card!r}")


def _card(body: str, *, lossy: bool) -> CommandCode:
    kind, _, rest = body.partition(":")
    match kind.upper():
        case "CMD":
            return _command(rest.upper().split(":"))
        case "STAFF":
            staff_id, _, name = rest.partition(":")
            if not _STAFF_ID.fullmatch(staff_id):
                raise _Reject("staff badge without a valid staff id")
            name = name.strip()
            reliable = name and not lossy and "?" not in name and len(name) <= _MAX_NAME
            return CommandCode("sign_in", staff_id=staff_id, staff_name=name if reliable else None)
    raise _Reject("unknown command card")


def _command(parts: list[str]) -> CommandCode:
    match parts:
        case ["CLOSE"]:
            return CommandCode("close")
        case ["UNDO"]:
            return CommandCode("undo")
        case ["TEST", kind] if kind in _TEST_KINDS:
            return CommandCode("test_kind", test_kind=_TEST_KINDS[kind])
        case ["MODE", mode] if mode in _MODES:
            return CommandCode("mode", mode=_MODES[mode])
        case ["RESULT", value] if value in _RESULTS:
            return CommandCode("result", result=_RESULTS[value])
        case ["POOL", size] if size.isascii() and size.isdigit() and 1 <= int(size) <= 50:
            return CommandCode("pool_size", pool_size=int(size))
    raise _Reject("unknown command card")


# --- input hygiene ---------------------------------------------------------------------------


def _sanitize(text: str) -> str:
    if "\ufffd" in text:
        raise _Reject("invalid UTF-8 (replacement character)")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        raise _Reject("invalid UTF-8") from None
    if size > MAX_CODE_BYTES:
        raise _Reject(f"code longer than {MAX_CODE_BYTES} bytes")
    text = text.removeprefix("\ufeff").strip(" ")
    if not text:
        raise _Reject("empty scan")
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise _Reject("control character in code")
        if category in ("Cf", "Co", "Cs"):
            raise _Reject("invisible or private-use character in code")
    return unicodedata.normalize("NFC", text)


# --- person QR codes -------------------------------------------------------------------------


def _person(text: str, rules: CodeRules, *, lossy: bool) -> PersonCode | None:
    fields = text.split("|")
    if len(fields) >= 5 and _HEALTH_DOB.fullmatch(fields[2]):
        if "health_qr" not in rules.person_formats:
            raise _Reject("health QR codes are not accepted at this station")
        return _health_qr(text, lossy=lossy)
    if len(fields) >= 7 or re.fullmatch(r"\d{12}", fields[0]):
        if "cccd" not in rules.person_formats:
            raise _Reject("CCCD codes are not accepted at this station")
        if len(fields) < 7:
            raise _Reject(f"CCCD QR with {len(fields)} fields (at least 7 expected)")
        return _cccd(fields, strict_province=rules.cccd_strict_province, lossy=lossy)
    return None


def _ddmmyyyy(value: str, what: str) -> dt.date:
    if not _DDMMYYYY.fullmatch(value):
        raise _Reject(f"{what} is not DDMMYYYY")
    try:
        return dt.date(int(value[4:]), int(value[2:4]), int(value[:2]))
    except ValueError:
        raise _Reject(f"impossible {what}") from None


def _cccd_sex(value: str) -> tuple[Literal["male", "female"] | None, bool]:
    """The sex field and whether it shows the loss of diacritics."""
    if value in ("Nam", "NAM", "nam"):
        return "male", False
    if value in ("Nữ", "NỮ", "nữ"):
        return "female", False
    # A keyboard-mode scanner cannot type "ữ": it drops it, or types '?', or 'u'.
    letters = "".join(c for c in value.lower() if "a" <= c <= "z")
    if letters == "nam":
        return "male", True
    if letters in ("n", "nu") and value[:1] in "Nn":
        return "female", True
    return None, True


def _cccd(fields: list[str], *, strict_province: bool, lossy: bool) -> PersonCode:
    number, old_id, name, dob_text, sex_text, address, issued_text = fields[:7]
    if not re.fullmatch(r"\d{12}", number):
        raise _Reject("CCCD number is not 12 digits")
    if old_id and not re.fullmatch(r"\d{9}|\d{12}", old_id):
        raise _Reject("old ID number (CMND) is not 9 or 12 digits")
    dob = _ddmmyyyy(dob_text, "date of birth")
    issued = _ddmmyyyy(issued_text, "date of issue")
    if dob.year < 1900:
        raise _Reject("date of birth before 1900")
    if issued < dob:
        raise _Reject("date of issue before date of birth")
    if strict_province and number[:3] not in PROVINCE_CODES:
        raise _Reject("CCCD number does not start with a province code")
    digit = int(number[3])
    if dob.year // 100 != 19 + digit // 2:
        raise _Reject("CCCD number and century of birth disagree")
    if number[4:6] != f"{dob.year % 100:02d}":
        raise _Reject("CCCD number and year of birth disagree")
    sex, sex_mangled = _cccd_sex(sex_text.strip())
    if sex is None and not lossy:
        raise _Reject("sex is not Nam or Nữ")
    if sex is not None and sex != ("male" if digit % 2 == 0 else "female"):
        raise _Reject("CCCD number and sex disagree")
    name, address = name.strip(), address.strip()
    # Evidence that the text went through a keyboard-mode scanner: it says so, characters came
    # through as '?', "Nữ" lost its letter, or name and address carry no diacritics at all (the
    # chip's data is always written with them).
    mangled = lossy or sex_mangled or "?" in name or "?" in address or (name + address).isascii()
    if not mangled:
        if not name:
            raise _Reject("empty name")
        if len(name) > _MAX_NAME:
            raise _Reject("name too long")
        if len(address) > _MAX_ADDRESS:
            raise _Reject("address too long")
    person = Person(
        key_type="cccd",
        key=number,
        name=None if mangled else name,
        name_reliable=not mangled,
        birth_date=dob.isoformat(),
        sex=sex,
        address=None if mangled or not address else address,
        document_number=number,
        old_id=old_id or None,
        issue_date=issued.isoformat(),
    )
    return PersonCode("cccd", person, tuple(fields[7:]))


def _health_qr(text: str, *, lossy: bool) -> PersonCode:
    parts = text.split("|", 5)
    if len(parts) == 5:  # no EXT field at all
        parts.append("")
    document, name, dob_text, kind, qid, ext = parts
    document, name, qid = document.strip(), name.strip(), qid.strip()
    if len(document) > 32 or not _DOCUMENT.fullmatch(document):
        raise _Reject("health QR document number is malformed")
    birth = _HEALTH_DOB.fullmatch(dob_text)
    if birth is None:  # pragma: no cover - checked by the caller
        raise _Reject("health QR date of birth is malformed")
    year, month, day = birth.groups()
    if int(year) < 1900:
        raise _Reject("date of birth before 1900")
    if month == "**" and day != "**":
        raise _Reject("health QR date of birth masks the month but not the day")
    if month != "**":
        try:
            dt.date(int(year), int(month), 1 if day == "**" else int(day))
        except ValueError:
            raise _Reject("impossible date of birth") from None
    if kind not in ("0", "1"):
        raise _Reject("health QR declaration kind is not 0 or 1")
    if qid and not _QID.fullmatch(qid):
        raise _Reject("health QR QID is malformed")
    if len(ext) > _MAX_EXT:
        raise _Reject("health QR EXT field too long")
    if qid:
        key_type: Literal["qid", "document"] = "qid"
        key = qid
    elif document and "*" not in document:
        key_type, key = "document", document
    else:
        raise _Reject("health QR without QID and with a masked document number")
    # The name is ASCII by specification; '?' means a scanner replaced characters it had.
    reliable = bool(name) and "?" not in name and (name.isascii() or not lossy)
    if reliable and len(name) > _MAX_NAME:
        raise _Reject("name too long")
    person = Person(
        key_type=key_type,
        key=key,
        name=name if reliable else None,
        name_reliable=reliable,
        birth_date=dob_text,
        document_number=document or None,
        ext=ext or None,
    )
    return PersonCode("health_qr", person)
