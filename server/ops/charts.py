"""History charts as inline SVG, rendered on the server (no JavaScript, nothing from a CDN)."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from markupsafe import Markup

WIDTH, HEIGHT = 560, 160
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 18, 22


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return value


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"


def chart(
    points: list[tuple[datetime, float]],
    *,
    title: str,
    start: datetime,
    end: datetime,
    bars: bool = False,
    empty_text: str = "",
    timezone: str = "Asia/Ho_Chi_Minh",
    css_class: str = "chart",
) -> Markup:
    """An SVG chart of ``points`` between ``start`` and ``end`` (a line, or hourly bars)."""
    span = max(1.0, (end - start).total_seconds())
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for _, v in points]
    low = min(0.0, min(values)) if values else 0.0
    high = _nice_max(max(values)) if values else 1.0
    if low < 0:
        low = -_nice_max(-low)
    rng = high - low or 1.0

    def x(at: datetime) -> float:
        return LEFT + plot_w * min(1.0, max(0.0, (at - start).total_seconds() / span))

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / rng)

    parts = [
        f'<svg class="{escape(css_class)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{LEFT}" y="12" font-size="12" font-weight="600">{escape(title)}</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        value = low + rng * frac
        yy = y(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 4}" y="{yy + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#666">{_fmt(value)}</text>'
        )
    tz = ZoneInfo(timezone)
    tick = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    every = max(1, int(span // 3600 // 6))
    while tick < end:
        local = tick.astimezone(tz)
        if local.hour % every == 0:
            xx = x(tick)
            parts.append(
                f'<text x="{xx:.1f}" y="{HEIGHT - 6}" font-size="10" text-anchor="middle" '
                f'fill="#666">{local:%H:%M}</text>'
            )
        tick += timedelta(hours=1)
    if not points:
        parts.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" font-size="12" '
            f'text-anchor="middle" fill="#999">{escape(empty_text)}</text>'
        )
    elif bars:
        bar_w = max(2.0, plot_w * 3600 / span - 2)
        for at, value in points:
            top, base = y(max(value, 0)), y(0)
            parts.append(
                f'<rect x="{x(at):.1f}" y="{top:.1f}" width="{bar_w:.1f}" '
                f'height="{max(0.5, base - top):.1f}" fill="#0b5f8a"><title>'
                f"{at.astimezone(tz):%H:%M} {_fmt(value)}</title></rect>"
            )
    else:
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x(at):.1f},{y(v):.1f}" for i, (at, v) in enumerate(points)
        )
        parts.append(f'<path d="{path}" fill="none" stroke="#0b5f8a" stroke-width="1.5"/>')
        at, v = points[-1]
        parts.append(
            f'<circle cx="{x(at):.1f}" cy="{y(v):.1f}" r="2.5" fill="#0b5f8a">'
            f"<title>{at.astimezone(tz):%H:%M} {_fmt(v)}</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
