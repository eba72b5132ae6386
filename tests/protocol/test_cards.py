"""Enrollment cards: what the QR code holds, and every way a scanned card can be wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cards import (
    SELFTEST_CARD,
    CardError,
    EnrollmentCard,
    is_enrollment_card,
    parse_enrollment_card,
)

US_KEYBOARD = {chr(c) for c in range(0x20, 0x7F)}


def test_a_card_with_vietnamese_wifi_is_plain_ascii_and_round_trips() -> None:
    card = EnrollmentCard(
        "https://swabline.soyte.example.vn",
        "k3Yt0k3n-abcdefghijklmn",
        "Trạm Y tế Phường 5",
        "mật khẩu&=?#%",
    )
    text = card.encode()
    assert text.startswith("SWABLINE:ENROLL:1?server=https%3A%2F%2Fswabline")
    assert set(text) <= US_KEYBOARD  # a keyboard-mode scanner can type every character
    assert parse_enrollment_card(text) == card


@given(
    token=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    ssid=st.none() | st.text(min_size=1, max_size=32),
    psk=st.text(max_size=63),
)
def test_any_card_round_trips(token: str, ssid: str | None, psk: str) -> None:
    card = EnrollmentCard("http://127.0.0.1:8080/base", token, ssid, psk if ssid else None)
    assert parse_enrollment_card(card.encode()) == card


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("TUBE-000123", "not an enrollment card"),
        ("SWABLINE:ENROLL:2?server=https%3A%2F%2Fa&token=t", "unsupported enrollment card version"),
        ("SWABLINE:ENROLL:1", "unsupported enrollment card version"),
        ("SWABLINE:ENROLL:1?server=https%3A%2F%2Fa", "the card has no token"),
        ("SWABLINE:ENROLL:1?token=abc", "the card has no server"),
        ("SWABLINE:ENROLL:1?server=ftp%3A%2F%2Fa&token=abc", "is not an http(s) URL"),
        ("SWABLINE:ENROLL:1?server=https%3A%2F%2Fa&token=abc&token=def", "repeats 'token'"),
        ("SWABLINE:ENROLL:1?server=https%3A%2F%2Fa&token=abc&admin=1", "unknown field 'admin'"),
        ("SWABLINE:ENROLL:1?server=https%3A%2F%2Fa&token=abc&ssid=%FF", "damaged"),
        ("SWABLINE:ENROLL:1?server=https%3A%2F%2Fa&token=abc&psk=x", "without a Wi-Fi name"),
        ("SWABLINE:ENROLL:1?server=https%3A%2F%2Fa&token=abc&" + "x" * 1100, "longer than"),
    ],
)
def test_damaged_or_foreign_cards_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(CardError) as err:
        parse_enrollment_card(text)
    assert reason in err.value.reason


def test_the_selftest_card_is_not_an_enrollment_card_and_types_on_a_us_keyboard() -> None:
    assert not is_enrollment_card(SELFTEST_CARD)
    assert set(SELFTEST_CARD) <= US_KEYBOARD
