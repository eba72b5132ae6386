"""Printed cards a station reads with its own scanner: enrollment and self-test.

An enrollment card is a QR code holding::

    SWABLINE:ENROLL:1?server=<url>&token=<token>[&ssid=<wifi name>&psk=<wifi password>]

Values are percent-encoded (RFC 3986), so the whole text is printable ASCII: a keyboard-mode
scanner, which can only type what a US keyboard has, reads it as well as a USB serial one, even
when the Wi-Fi name has Vietnamese letters.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

ENROLL_PREFIX = "SWABLINE:ENROLL:"
CARD_VERSION = "1"
SELFTEST_CARD = "SWABLINE:TEST:AaZz-0099:1122"
"""The self-test card's text: both letter cases, repeated digits and punctuation, so a scanner
set to the wrong keyboard layout or a decoder that drops repeated keys is caught."""
MAX_CARD_CHARS = 1024


class CardError(ValueError):
    """A scanned card is not a valid card; ``reason`` says why, for the technician."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EnrollmentCard:
    server_url: str
    token: str
    wifi_ssid: str | None = None
    wifi_password: str | None = None

    def __post_init__(self) -> None:
        check_server_url(self.server_url)
        if not self.token or not self.token.isascii() or not self.token.isprintable():
            raise CardError("the token is empty or not printable ASCII")
        if self.wifi_password is not None and self.wifi_ssid is None:
            raise CardError("a Wi-Fi password without a Wi-Fi name (ssid)")

    def encode(self) -> str:
        """The text to put in the QR code."""
        fields = {"server": self.server_url, "token": self.token}
        if self.wifi_ssid is not None:
            fields["ssid"] = self.wifi_ssid
        if self.wifi_password is not None:
            fields["psk"] = self.wifi_password
        text = f"{ENROLL_PREFIX}{CARD_VERSION}?" + urlencode(fields, quote_via=quote, safe="")
        if len(text) > MAX_CARD_CHARS:
            raise CardError(f"the card text is longer than {MAX_CARD_CHARS} characters")
        return text


def check_server_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CardError(f"the server address {url!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise CardError(f"the server address {url!r} must not have a query or fragment")
    return url


def is_enrollment_card(text: str) -> bool:
    return text.startswith(ENROLL_PREFIX)


def parse_enrollment_card(text: str) -> EnrollmentCard:
    """Parse a scanned enrollment card; ``CardError`` with a reason if it is not a valid one."""
    if not is_enrollment_card(text):
        raise CardError("not an enrollment card (it does not start with SWABLINE:ENROLL:)")
    if len(text) > MAX_CARD_CHARS:
        raise CardError(f"the card is longer than {MAX_CARD_CHARS} characters")
    version, sep, query = text[len(ENROLL_PREFIX) :].partition("?")
    if version != CARD_VERSION or not sep:
        raise CardError(f"unsupported enrollment card version {version!r} (expected 1)")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise CardError("the card is damaged (bad encoding): print it again") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise CardError(f"the card repeats {key!r}")
        if key not in ("server", "token", "ssid", "psk"):
            raise CardError(f"the card has an unknown field {key!r}")
        fields[key] = value
    for required in ("server", "token"):
        if not fields.get(required):
            raise CardError(f"the card has no {required}")
    return EnrollmentCard(
        server_url=fields["server"],
        token=fields["token"],
        wifi_ssid=fields.get("ssid"),
        wifi_password=fields.get("psk"),
    )
