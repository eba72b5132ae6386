"""QR codes as inline SVG (segno): crisp on screen and on paper, nothing fetched."""

from __future__ import annotations

import segno
from markupsafe import Markup


def qr_svg(text: str, *, scale: int = 4, title: str | None = None) -> Markup:
    """An ``<svg>`` element for ``text`` (error correction M, a 4-module quiet zone) that scales
    to the width CSS gives it (a ``viewBox``, no fixed size)."""
    qr = segno.make(text, error="m")
    svg = qr.svg_inline(
        scale=scale, border=4, title=title, svgclass="qr", lineclass=None, omitsize=True
    )
    return Markup(svg)
