"""Printable cards (HTML with a QR code, made with segno): enrollment cards and the test card.

Sampling staff and technicians read Vietnamese first, English below. The pages print on A6 or
A4 with the browser's Print; the QR code is an inline SVG, so the page needs nothing else.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

import segno

from protocol.cards import SELFTEST_CARD, EnrollmentCard

CARD_CSS = """
 .card { border: 2px solid #222; border-radius: 8px; padding: 1em; max-width: 12cm;
         font-family: sans-serif; background: #fff; color: #000; }
 .card h1 { font-size: 1.3em; margin: 0 0 .2em; }
 .card h2 { font-size: 1em; color: #555; margin: 0 0 1em; }
 .card .qr svg { width: 7cm; height: 7cm; }
 .card dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
 .card dt { font-weight: bold; }
 .card dd { margin: 0; font-family: monospace; word-break: break-all; }
 .card .warn { border-top: 1px solid #999; margin-top: 1em; padding-top: .5em; font-size: .9em; }
"""
"""Style of a card, for pages that embed ``enrollment_card_fragment``."""

_PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>{title}</title>
<style>
 body {{ margin: 1.5cm; }}
{css}
 @media print {{ body {{ margin: 0; }} }}
</style></head>
<body>{card}</body></html>
"""

_CARD = """<div class="card">
<h1>{title_vi}</h1><h2>{title_en}</h2>
<div class="qr">{qr}</div>
{body}
</div>"""


def _qr_svg(text: str) -> str:
    return str(segno.make(text, error="m", micro=False).svg_inline(scale=4, border=4))


def enrollment_card_fragment(
    card: EnrollmentCard,
    *,
    facility: str | None = None,
    expires_at: datetime | None = None,
    station_id: str | None = None,
) -> str:
    """The card itself (a ``<div class="card">``, styled by ``CARD_CSS``)."""
    rows = [("Máy chủ / Server", card.server_url)]
    if facility:
        rows.append(("Cơ sở / Facility", facility))
    if station_id:
        rows.append(("Cấp lại cho trạm / Re-provisions", station_id))
    if expires_at:
        rows.append(("Hết hạn / Expires", expires_at.strftime("%Y-%m-%d %H:%M %Z")))
    if card.wifi_ssid:
        rows.append(("Wi-Fi", card.wifi_ssid))
    rows.append(("Mã / Token", card.token))
    body = (
        "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows) + "</dl>"
        "<p>Quét mã QR bằng máy quét của trạm chưa đăng ký. Trạm phát tín hiệu xác nhận khi "
        "đăng ký xong.<br><i>Scan the QR code with the new station's own scanner. The station "
        "confirms with a signal once it is enrolled. Or type: "
        "<code>swabline provision --server URL --token TOKEN</code>.</i></p>"
        '<p class="warn">Chỉ dùng một lần. Giữ bí mật, hủy thẻ sau khi dùng.<br>'
        "<i>Single use. Keep it secret; destroy the card once used.</i></p>"
    )
    return _CARD.format(
        title_vi="Thẻ đăng ký trạm quét",
        title_en="Station enrollment card",
        qr=_qr_svg(card.encode()),
        body=body,
    )


def enrollment_card_html(
    card: EnrollmentCard,
    *,
    facility: str | None = None,
    expires_at: datetime | None = None,
    station_id: str | None = None,
) -> str:
    """An enrollment card as a page of its own: scanned by an unprovisioned station's own
    scanner."""
    return _PAGE.format(
        title="Swabline enrollment card",
        css=CARD_CSS,
        card=enrollment_card_fragment(
            card, facility=facility, expires_at=expires_at, station_id=station_id
        ),
    )


def selftest_card_html() -> str:
    """The card 'swabline selftest' asks staff to scan."""
    body = (
        f"<dl><dt>Nội dung / Text</dt><dd>{escape(SELFTEST_CARD)}</dd></dl>"
        "<p>Dùng khi chạy <code>swabline selftest</code>: quét thẻ này khi trạm yêu cầu.<br>"
        "<i>For <code>swabline selftest</code>: scan this card when the station asks.</i></p>"
    )
    return _PAGE.format(
        title="Swabline test card",
        css=CARD_CSS,
        card=_CARD.format(
            title_vi="Thẻ kiểm tra trạm",
            title_en="Station test card",
            qr=_qr_svg(SELFTEST_CARD),
            body=body,
        ),
    )
