"""What a station makes of every kind of code staff scan (synthetic people only)."""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codes import (
    MAX_CODE_BYTES,
    CodeRules,
    CommandCode,
    PersonCode,
    RejectedCode,
    TubeCode,
    card_text,
    classify,
    describe,
)
from protocol.events import Person
from tests.agent.people import cccd, cccd_number, health_qr

RULES = CodeRules.build([r"KG-RG-\d{6}", r"HN\d{2}-[A-Z]{2}-\d{4,8}"])
DOMAIN_CCCD_1 = (
    "079303001234|025123456|Nguyễn Thị Bình|15082003|Nữ|12 Lê Lợi, P. Bến Nghé, Q.1, "
    "TP. Hồ Chí Minh|20042021"
)
DOMAIN_CCCD_2 = "001090012345||Trần Văn An|01011990|Nam|Xã Cẩm Yên, H. Thạch Thất, Hà Nội|31052021"
DOMAIN_HEALTH = "******001234|NGUYEN THI BINH|2003-**-**|0|QX7K2M9P4T|"


def person(text: str, *, lossy: bool = False, rules: CodeRules = RULES) -> PersonCode:
    code = classify(text, rules, lossy=lossy)
    assert isinstance(code, PersonCode), code
    return code


# --- persons: accepted --------------------------------------------------------------------

ACCEPTED_PERSONS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "domain example 1",
        DOMAIN_CCCD_1,
        dict(
            key_type="cccd",
            key="079303001234",
            name="Nguyễn Thị Bình",
            name_reliable=True,
            birth_date="2003-08-15",
            sex="female",
            address="12 Lê Lợi, P. Bến Nghé, Q.1, TP. Hồ Chí Minh",
            document_number="079303001234",
            old_id="025123456",
            issue_date="2021-04-20",
        ),
    ),
    (
        "domain example 2, empty old id",
        DOMAIN_CCCD_2,
        dict(
            key="001090012345",
            name="Trần Văn An",
            sex="male",
            birth_date="1990-01-01",
            old_id=None,
            issue_date="2021-05-31",
        ),
    ),
    (
        "newer card with extra fields",
        cccd(7, extra=("Nguyễn Văn Cha", "Trần Thị Mẹ", "01012030")),
        dict(key="079303000007", name="Nguyễn Thị Bình", name_reliable=True),
    ),
    (
        "12-digit old id",
        cccd(8, old_id="079087654321"),
        dict(old_id="079087654321"),
    ),
    (
        "born 29 February of a leap year",
        cccd(9, born=dt.date(2000, 2, 29), female=False, name="Đỗ Văn Hùng"),
        dict(birth_date="2000-02-29", sex="male", key="079200000009"),
    ),
    (
        "born in 1900",
        cccd(10, born=dt.date(1900, 1, 1), issued=dt.date(2021, 1, 1)),
        dict(birth_date="1900-01-01", key="079100000010"),
    ),
    (
        "name in decomposed Unicode (NFD) stored composed",
        cccd(11, name=unicodedata.normalize("NFD", "Nguyễn Thị Ánh")),
        dict(name="Nguyễn Thị Ánh", name_reliable=True),
    ),
    (
        "spaces and a byte-order mark around the code",
        "\ufeff " + cccd(12) + "  ",
        dict(key="079303000012", name_reliable=True),
    ),
    (
        "empty address",
        cccd(13, address=""),
        dict(address=None, name="Nguyễn Thị Bình"),
    ),
    (
        "every province code of Hanoi, Da Nang, Ca Mau",
        cccd(14, province="096"),
        dict(key="096303000014"),
    ),
    (
        "health QR v1.1 domain example",
        DOMAIN_HEALTH,
        dict(
            key_type="qid",
            key="QX7K2M9P4T",
            name="NGUYEN THI BINH",
            name_reliable=True,
            birth_date="2003-**-**",
            document_number="******001234",
            ext=None,
            sex=None,
        ),
    ),
    (
        "health QR with full birth date and EXT kept raw (with '|' inside)",
        health_qr("QA1", born="1990-01-31", ext="1;0912345678|HS4010123456789"),
        dict(key="QA1", birth_date="1990-01-31", ext="1;0912345678|HS4010123456789"),
    ),
    (
        "health QR with day masked only",
        health_qr("QA2", born="1985-07-**"),
        dict(birth_date="1985-07-**"),
    ),
    (
        "health QR declared on someone's behalf",
        health_qr("QA3", kind="1"),
        dict(key="QA3"),
    ),
    (
        "health QR without EXT field at all",
        "******001234|NGUYEN VAN D|2001-**-**|0|QA4",
        dict(key="QA4", ext=None),
    ),
    (
        "health QR without QID but with an unmasked document number",
        health_qr("", document="C1234567"),
        dict(key_type="document", key="C1234567"),
    ),
    (
        "health QR with a fully masked document number",
        health_qr("QA5", document="************"),
        dict(document_number="************", key="QA5"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in ACCEPTED_PERSONS],
                         ids=[c[0] for c in ACCEPTED_PERSONS])  # fmt: skip
def test_person_codes_accepted(text: str, expected: dict[str, Any]) -> None:
    got = person(text).person
    for key, value in expected.items():
        assert getattr(got, key) == value, key


def test_extra_fields_of_newer_cards_are_kept_but_not_stored() -> None:
    code = person(cccd(1, extra=("EXTRA-ONE", "31122030")))
    assert code.extra_fields == ("EXTRA-ONE", "31122030")
    stored = code.person.model_dump_json()
    assert "EXTRA-ONE" not in stored and "31122030" not in stored


# --- keyboard-mode scanners ---------------------------------------------------------------

MANGLED = [
    ("scanner says lossy", cccd(1), True),
    ("diacritics typed as '?'", DOMAIN_CCCD_1.replace("ễ", "?").replace("ữ", "?"), False),
    ("diacritics dropped", "079303001234||Nguyn Th Bnh|15082003|N|12 L Li|20042021", False),
    ("diacritics stripped to ASCII", "079303001234||Nguyen Thi Binh|15082003|Nu|12 Le Loi|20042021",
     False),
    ("only the sex field gives it away", cccd(1).replace("|Nữ|", "|N?|"), False),
    ("lossy and Nữ lost entirely", cccd(1).replace("|Nữ|", "||"), True),
]  # fmt: skip


@pytest.mark.parametrize(("text", "lossy"), [c[1:] for c in MANGLED], ids=[c[0] for c in MANGLED])
def test_cccd_through_a_keyboard_scanner_keeps_id_and_dates_but_never_the_mangled_name(
    text: str, lossy: bool
) -> None:
    got = person(text, lossy=lossy).person
    assert got.key_type == "cccd"
    assert got.key == text.split("|")[0]
    assert got.birth_date == "2003-08-15"
    assert got.issue_date in ("2021-04-20",)
    assert got.name is None
    assert got.name_reliable is False
    assert got.address is None  # the address is mangled the same way
    assert got.sex in ("female", None)


def test_a_health_qr_name_is_ascii_and_survives_a_keyboard_scanner() -> None:
    got = person(DOMAIN_HEALTH, lossy=True).person
    assert got.name == "NGUYEN THI BINH"
    assert got.name_reliable is True
    mangled = person(DOMAIN_HEALTH.replace("BINH", "B?NH"), lossy=True).person
    assert mangled.name is None and mangled.name_reliable is False


# --- persons: rejected --------------------------------------------------------------------

REJECTED_PERSONS = [
    ("31 February", cccd(1).replace("15082003", "31022003"), "impossible date of birth"),
    ("29 February of 2001", cccd(1, born=dt.date(2001, 3, 1)).replace("01032001", "29022001"),
     "impossible date of birth"),
    ("month 13", cccd(1).replace("15082003", "15132003"), "impossible date of birth"),
    ("day 00", cccd(1).replace("15082003", "00082003"), "impossible date of birth"),
    ("date with separators", cccd(1).replace("15082003", "15/08/2003"), "not DDMMYYYY"),
    ("impossible issue date", cccd(1).replace("20042021", "31042021"), "impossible date of issue"),
    ("issued before birth", cccd(1, issued=dt.date(2001, 1, 1)), "before date of birth"),
    ("born before 1900", "079199000001||Nguyễn Văn Cụ|01011899|Nam|Hà Nội|01012021", "before 1900"),
    ("11-digit number", cccd(1).replace("079303000001", "07930300001"), "12 digits"),
    ("letters in number", cccd(1).replace("079303000001", "07930300000A"), "12 digits"),
    ("old id of 8 digits", cccd(1, old_id="12345678"), "old ID"),
    ("unknown province code", cccd(1, province="003"), "province code"),
    ("province 000", cccd(1, province="000"), "province code"),
    ("century digit says 20th century", cccd(1).replace("079303", "079103", 1), "century"),
    ("year digits disagree", cccd(1).replace("079303", "079304", 1), "year of birth"),
    ("sex digit disagrees", cccd(1).replace("079303", "079203", 1), "sex disagree"),
    ("sex field neither Nam nor Nữ", cccd(1).replace("|Nữ|", "|Female|"), "Nam or Nữ"),
    ("six fields", "|".join(cccd(1).split("|")[:6]), "6 fields"),
    ("empty name", cccd(1, name=" "), "empty name"),
    ("address beyond 300 characters", cccd(1, address="Phường " * 60), "address too long"),
    ("health: declaration kind 2", health_qr(kind="2"), "declaration kind"),
    ("health: masked document, no QID", health_qr(""), "without QID"),
    ("health: 30 February", health_qr(born="2003-02-30"), "impossible date of birth"),
    ("health: month masked, day not", health_qr(born="2003-**-15"), "masks the month"),
    ("health: QID with spaces", health_qr("QX 7"), "QID"),
    ("health: document with '*' inside", health_qr(document="12**34"), "document number"),
    ("health: EXT over 1000 chars", health_qr(ext="9" * 1001), "EXT field too long"),
    ("health: born 1850", health_qr(born="1850-01-01"), "before 1900"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "reason"), [c[1:] for c in REJECTED_PERSONS], ids=[c[0] for c in REJECTED_PERSONS]
)
def test_person_codes_rejected(text: str, reason: str) -> None:
    code = classify(text, RULES)
    assert isinstance(code, RejectedCode), code
    assert reason in code.reason


def test_reasons_never_quote_personal_data() -> None:
    for _, text, _ in REJECTED_PERSONS:
        reason = classify(text, RULES)
        assert isinstance(reason, RejectedCode)
        for field in text.split("|"):
            if len(field) >= 4:
                assert field not in reason.reason


def test_province_check_can_be_relaxed_for_births_registered_abroad() -> None:
    text = cccd(1, province="704")
    assert isinstance(classify(text, RULES), RejectedCode)
    relaxed = CodeRules.build(RULES_PATTERNS, cccd_strict_province=False)
    assert person(text, rules=relaxed).person.key == "704303000001"


def test_person_formats_can_be_turned_off() -> None:
    only_cccd = CodeRules.build(RULES_PATTERNS, ["cccd"])
    refused = classify(DOMAIN_HEALTH, only_cccd)
    assert refused == RejectedCode("health QR codes are not accepted at this station")
    only_health = CodeRules.build(RULES_PATTERNS, ["health_qr"])
    assert classify(DOMAIN_CCCD_1, only_health) == RejectedCode(
        "CCCD codes are not accepted at this station"
    )
    assert isinstance(classify(DOMAIN_HEALTH, only_health), PersonCode)


RULES_PATTERNS = [p.pattern for p in RULES.tube_patterns]


# --- tubes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pattern"),
    [("KG-RG-000123", r"KG-RG-\d{6}"), ("HN01-CG-1234", r"HN\d{2}-[A-Z]{2}-\d{4,8}")],
)
def test_tubes_match_the_configured_patterns(text: str, pattern: str) -> None:
    assert classify(text, RULES) == TubeCode(tube=text, pattern=pattern)


@pytest.mark.parametrize(
    "text", ["KG-RG-00012", "KG-RG-0001234", "kg-rg-000123", "xKG-RG-000123", "HN01-CG-123"]
)
def test_codes_that_only_look_like_tubes_are_rejected(text: str) -> None:
    assert classify(text, RULES) == RejectedCode("unknown code format")


def test_no_tube_pattern_is_built_in() -> None:
    assert classify("KG-RG-000123", CodeRules.build()) == RejectedCode("unknown code format")
    assert classify("TUBE-00001", CodeRules.build()) == RejectedCode("unknown code format")


def test_a_tube_id_longer_than_64_characters_is_refused() -> None:
    rules = CodeRules.build([r"T\d+"])
    assert isinstance(classify("T" + "1" * 63, rules), TubeCode)
    assert classify("T" + "1" * 64, rules) == RejectedCode("tube code longer than 64 characters")


# --- command cards ------------------------------------------------------------------------

CARDS = [
    ("SWABLINE:CMD:CLOSE", CommandCode("close")),
    ("SWABLINE:CMD:UNDO", CommandCode("undo")),
    ("SWABLINE:CMD:TEST:RT_PCR", CommandCode("test_kind", test_kind="rt_pcr")),
    ("SWABLINE:CMD:TEST:RAPID_ANTIGEN", CommandCode("test_kind", test_kind="rapid_antigen")),
    ("SWABLINE:CMD:POOL:1", CommandCode("pool_size", pool_size=1)),
    ("SWABLINE:CMD:POOL:10", CommandCode("pool_size", pool_size=10)),
    ("SWABLINE:CMD:POOL:50", CommandCode("pool_size", pool_size=50)),
    ("SWABLINE:CMD:MODE:SINGLE", CommandCode("mode", mode="single")),
    ("SWABLINE:CMD:MODE:POOL", CommandCode("mode", mode="pool")),
    ("SWABLINE:CMD:RESULT:POSITIVE", CommandCode("result", result="positive")),
    ("SWABLINE:CMD:RESULT:NEGATIVE", CommandCode("result", result="negative")),
    ("SWABLINE:CMD:RESULT:INVALID", CommandCode("result", result="invalid")),
    ("SWABLINE:STAFF:nv-042", CommandCode("sign_in", staff_id="nv-042")),
    (
        "SWABLINE:STAFF:nv-042:Nguyễn Văn Tâm",
        CommandCode("sign_in", staff_id="nv-042", staff_name="Nguyễn Văn Tâm"),
    ),
    ("swabline:cmd:close", CommandCode("close")),  # a scanner with caps lock on
]


@pytest.mark.parametrize(("text", "card"), CARDS, ids=[c[0] for c in CARDS])
def test_command_cards(text: str, card: CommandCode) -> None:
    assert classify(text, RULES) == card


@pytest.mark.parametrize(("text", "card"), CARDS[:-1], ids=[c[0] for c in CARDS[:-1]])
def test_printed_card_text_reads_back_as_the_same_card(text: str, card: CommandCode) -> None:
    assert card_text(card) == text
    assert classify(card_text(card), RULES) == card


def test_a_staff_name_through_a_keyboard_scanner_is_dropped_not_stored_mangled() -> None:
    assert classify("SWABLINE:STAFF:nv-042:Nguy?n V?n T?m", RULES, lossy=True) == CommandCode(
        "sign_in", staff_id="nv-042"
    )
    assert classify("SWABLINE:STAFF:nv-042:Nguy?n", RULES) == CommandCode(
        "sign_in", staff_id="nv-042"
    )


@pytest.mark.parametrize(
    "text",
    [
        "SWABLINE:CMD:POOL:0",
        "SWABLINE:CMD:POOL:51",
        "SWABLINE:CMD:POOL:ten",
        "SWABLINE:CMD:POOL:",
        "SWABLINE:CMD:POOL:١٠",  # Arabic-Indic digits are digits to Python, not to us
        "SWABLINE:CMD:CLOSE:NOW",
        "SWABLINE:CMD:TEST:ELISA",
        "SWABLINE:CMD:RESULT:MAYBE",
        "SWABLINE:CMD:SELFDESTRUCT",
        "SWABLINE:CMD:",
        "SWABLINE:",
        "SWABLINE:ENROLL:abc",
        "SWABLINE:STAFF:",
        "SWABLINE:STAFF:has space",
    ],
)
def test_malformed_or_unknown_cards_are_rejected(text: str) -> None:
    code = classify(text, RULES)
    assert isinstance(code, RejectedCode)
    assert "card" in code.reason or "staff" in code.reason


# --- input hygiene ------------------------------------------------------------------------

HYGIENE = [
    ("", "empty scan"),
    ("   ", "empty scan"),
    ("\ufeff", "empty scan"),
    ("KG-RG-\x00000123", "control character"),
    ("KG-RG-000123\t", "control character"),
    ("\x1b[2JKG-RG-000123", "control character"),
    ("KG-RG-000123\r\n", "control character"),
    ("KG\u200b-RG-000123", "invisible"),
    ("\ue000KG-RG-000123", "private-use"),
    ("Nguy\ufffdn", "invalid UTF-8"),
    ("KG-RG-\udcff", "invalid UTF-8"),
    ("9" * (MAX_CODE_BYTES + 1), "longer than 4096 bytes"),
    ("ữ" * 1366, "longer than 4096 bytes"),  # 1366 characters, 4098 bytes
    ("hello world", "unknown code format"),
    ("a|b|c", "unknown code format"),
    ("https://example.org/?q=1", "unknown code format"),
]


@pytest.mark.parametrize(("text", "reason"), HYGIENE, ids=[repr(h[0][:20]) for h in HYGIENE])
def test_unusable_input_is_rejected_with_a_reason(text: str, reason: str) -> None:
    code = classify(text, RULES)
    assert isinstance(code, RejectedCode)
    assert reason in code.reason


def test_exactly_4096_bytes_is_still_read() -> None:
    base = cccd(1) + "|"
    text = base + "x" * (MAX_CODE_BYTES - len(base.encode()))
    assert len(text.encode()) == MAX_CODE_BYTES
    assert isinstance(classify(text, RULES), PersonCode)
    assert isinstance(classify(text + "x", RULES), RejectedCode)


# --- describe (inspect-code) -------------------------------------------------------------


def test_describe_is_one_json_object_per_code() -> None:
    assert describe(classify("", RULES)) == {"accepted": False, "reason": "empty scan"}
    assert describe(classify("SWABLINE:CMD:POOL:5", RULES)) == {
        "accepted": True,
        "kind": "command",
        "command": "pool_size",
        "pool_size": 5,
    }
    assert describe(classify("KG-RG-000001", RULES))["kind"] == "tube"
    shown = describe(classify(DOMAIN_CCCD_1, RULES))
    assert shown["format"] == "cccd"
    assert json.loads(json.dumps(shown, ensure_ascii=False)) == shown


# --- fuzzing: nothing crashes ------------------------------------------------------------


def _check(text: str, lossy: bool) -> None:
    code = classify(text, RULES, lossy=lossy)
    assert isinstance(code, PersonCode | TubeCode | CommandCode | RejectedCode)
    json.dumps(describe(code))
    if isinstance(code, PersonCode):
        Person.model_validate(code.person.model_dump())
        if lossy and code.format == "cccd":
            assert code.person.name is None
    if isinstance(code, RejectedCode):
        assert 0 < len(code.reason) <= 200


@settings(max_examples=400, deadline=None)
@given(st.text(), st.booleans())
def test_fuzz_any_text(text: str, lossy: bool) -> None:
    _check(text, lossy)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["replace", "surrogateescape", "ignore"]))
def test_fuzz_any_bytes_as_a_source_would_decode_them(raw: bytes, errors: str) -> None:
    _check(raw.decode("utf-8", errors=errors), False)


_FIELD = st.one_of(
    st.text(max_size=20),
    st.from_regex(r"\d{8}|\d{9}|\d{12}|\*{6}\d{6}|\d{4}-(\d\d|\*\*)-(\d\d|\*\*)", fullmatch=True),
    st.sampled_from(["Nam", "Nữ", "N?", "Nu", "0", "1", "", "QX7K2M9P4T"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_FIELD, min_size=1, max_size=10), st.booleans())
def test_fuzz_pipe_separated_fields(fields: list[str], lossy: bool) -> None:
    _check("|".join(fields), lossy)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 999),
    st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31)),
    st.booleans(),
    st.integers(0, 999_999),
)
def test_every_consistent_cccd_number_is_accepted(
    province: int, born: dt.date, female: bool, serial: int
) -> None:
    code = f"{province:03d}"
    text = cccd(serial, born=born, female=female, province=code, issued=dt.date(2100, 1, 1))
    got = classify(text, CodeRules.build(cccd_strict_province=False))
    assert isinstance(got, PersonCode), got
    assert got.person.key == cccd_number(code, born, female, serial)
    assert re.fullmatch(r"\d{12}", got.person.key)
