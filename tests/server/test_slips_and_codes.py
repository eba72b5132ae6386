"""Signed slip tokens, lookup codes and the personal QR in the health-QR v1.1 layout, read back
from a rendered image with zbar as a station's camera would."""

from __future__ import annotations

import io
from datetime import date

import segno
from PIL import Image
from pyzbar.pyzbar import decode

from server.healthqr import (
    QID_RE,
    ascii_upper,
    declaration_qr,
    format_lookup_code,
    new_lookup_code,
    new_qid,
    normalise_lookup_code,
    parse_health_qr,
)
from server.signing import KeyedHash, SlipRef, SlipSigner


def test_a_slip_token_verifies_only_with_its_key_and_unchanged() -> None:
    signer = SlipSigner(b"server-secret-" * 4)
    token = signer.sign(SlipRef(result_id=1234, person_id=56))
    assert signer.verify(token) == SlipRef(1234, 56)
    assert SlipSigner(b"another-secret" * 4).verify(token) is None
    body, tag = token.rsplit(".", 1)
    forged = f"1235.56.{tag}"
    assert signer.verify(forged) is None
    assert signer.verify(body + "." + tag[:-1] + ("A" if tag[-1] != "A" else "B")) is None
    for junk in ("", "1.2", "a.b.c", "1.2.!!!", "1.2." + "A" * 200):
        assert signer.verify(junk) is None


def test_keyed_hashes_depend_on_purpose_and_key() -> None:
    h = KeyedHash(b"k" * 32)
    assert h("id", "079303001234") == h("id", "079303001234")
    assert h("id", "079303001234") != h("code", "079303001234")
    assert KeyedHash(b"j" * 32)("id", "079303001234") != h("id", "079303001234")
    assert len(h("id", "x")) == 64


def test_lookup_codes_survive_being_read_aloud_and_retyped() -> None:
    code = new_lookup_code()
    assert len(code) == 10 and "I" not in code and "O" not in code
    printed = format_lookup_code(code)
    assert printed.count("-") == 2
    assert normalise_lookup_code(printed.lower()) == code
    assert normalise_lookup_code(" 0O1I-L ") == "00111"


def test_the_personal_qr_uses_the_health_qr_layout_with_a_server_qid() -> None:
    qid = new_qid()
    assert QID_RE.fullmatch(qid)
    qr = declaration_qr(
        name="Nguyễn Thị Bình",
        birth_date=date(2003, 8, 15),
        document="079303001234",
        qid=qid,
        on_behalf=False,
    )
    text = qr.encode()
    assert text == f"******001234|NGUYEN THI BINH|2003-**-**|0|{qid}|"
    assert parse_health_qr(text) == qr
    on_behalf = declaration_qr(
        name="Đặng Văn Đức", birth_date=date(1950, 1, 2), document=None, qid=qid, on_behalf=True
    )
    assert on_behalf.encode() == f"|DANG VAN DUC|1950-**-**|1|{qid}|"


def test_the_printed_qr_reads_back_exactly_with_zbar() -> None:
    qid = new_qid()
    payload = declaration_qr(
        name="Trần Văn An",
        birth_date=date(1990, 1, 1),
        document="001090012345",
        qid=qid,
        on_behalf=False,
    ).encode()
    buf = io.BytesIO()
    segno.make(payload, error="m").save(buf, kind="png", scale=6, border=4)
    image = Image.open(io.BytesIO(buf.getvalue()))
    decoded = decode(image)
    assert [d.data.decode() for d in decoded] == [payload]


def test_names_become_upper_case_ascii() -> None:
    assert ascii_upper("  Lê   Hoàng Cường ") == "LE HOANG CUONG"
    assert ascii_upper("Nguyễn|Thị") == "NGUYEN THI"
