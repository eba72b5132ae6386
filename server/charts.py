"""Small server-rendered SVG charts: no JavaScript, nothing fetched, light enough for a cheap
laptop or a phone. The SVG scales to its container (``viewBox``, ``width=100%``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 640, 240
PAD_L, PAD_R, PAD_T, PAD_B = 52, 12, 44, 30
COLOURS = ("#1f6feb", "#d4a72c", "#cf222e", "#2da44e", "#8250df")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 2.5, 5, 10):
        scale = 10 ** (len(str(int(value))) - 1)
        candidate = step * scale
        if candidate >= value:
            return float(candidate)
    return float(value)


def _ticks(top: float) -> int:
    """How many intervals divide ``top`` into round steps (5 for 5, 2.5, 50...; else 4)."""
    lead = top / 10 ** math.floor(math.log10(top)) if top > 0 else 1
    return 5 if round(lead, 6) in (2.5, 5.0) else 4


def _fmt(value: float, unit: str, top: float = 0.0) -> str:
    if unit == "%":
        digits = 1 if 0 < top <= 0.05 else 0
        return f"{value * 100:.{digits}f}%"
    if value == int(value):
        return f"{value:.0f}{unit}"
    return f"{value:.2f}".rstrip("0").rstrip(".") + unit


def _frame(title: str, labels: Sequence[str], top: float, unit: str) -> list[str]:
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="8" y="16" font-size="14" font-weight="600">{escape(title)}</text>',
    ]
    steps = _ticks(top)
    for i in range(steps + 1):
        y = PAD_T + plot_h - plot_h * i / steps
        out.append(
            f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#d0d7de" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
            f"{escape(_fmt(top * i / steps, unit, top))}</text>"
        )
    n = max(len(labels), 1)
    every = max(1, -(-n // 12))
    for i, label in enumerate(labels):
        if i % every:
            continue
        x = PAD_L + plot_w * (i + 0.5) / n
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - PAD_B + 15}" font-size="11" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    return out


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    unit: str = "",
    stacked: bool = True,
) -> str:
    """Bars per label; several series are stacked (or side by side)."""
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    n = max(len(labels), 1)
    if stacked:
        peak = max((sum(s[1][i] for s in series) for i in range(len(labels))), default=0.0)
    else:
        peak = max((v for s in series for v in s[1]), default=0.0)
    top = _nice_max(peak)
    out = _frame(title, labels, top, unit)
    slot = plot_w / n
    bar_w = slot * 0.7 / (1 if stacked else max(len(series), 1))
    for i in range(len(labels)):
        base = 0.0
        for k, (name, values) in enumerate(series):
            v = values[i]
            h = plot_h * v / top
            x = PAD_L + slot * i + slot * 0.15 + (0 if stacked else k * bar_w)
            y = PAD_T + plot_h - h - (plot_h * base / top if stacked else 0)
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[k % len(COLOURS)]}"><title>{escape(labels[i])} '
                f"{escape(name)}: {escape(_fmt(v, unit, top))}</title></rect>"
            )
            if stacked:
                base += v
    out.extend(_legend(series))
    out.append("</svg>")
    return "\n".join(out)


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    unit: str = "",
) -> str:
    """Lines per series; None values leave a gap."""
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    n = max(len(labels), 1)
    peak = max((v for s in series for v in s[1] if v is not None), default=0.0)
    top = min(1.0, _nice_max(max(peak, 0.01) * 100) / 100) if unit == "%" else _nice_max(peak)
    out = _frame(title, labels, top, unit)
    for k, (name, values) in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        path: list[str] = []
        for i, v in enumerate(values):
            if v is None:
                if path:
                    out.append(_polyline(path, colour))
                path = []
                continue
            x = PAD_L + plot_w * (i + 0.5) / n
            y = PAD_T + plot_h - plot_h * v / top
            path.append(f"{x:.1f},{y:.1f}")
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(labels[i])} {escape(name)}: {escape(_fmt(v, unit, top))}</title>"
                "</circle>"
            )
        if path:
            out.append(_polyline(path, colour))
    out.extend(_legend(series))
    out.append("</svg>")
    return "\n".join(out)


def _polyline(points: list[str], colour: str) -> str:
    return f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="2"/>'


def _legend(series: Sequence[tuple[str, Sequence[object]]]) -> list[str]:
    """One line under the title, left to right."""
    out = []
    x = 8.0
    for k, (name, _) in enumerate(series):
        out.append(
            f'<rect x="{x:.1f}" y="24" width="10" height="10" '
            f'fill="{COLOURS[k % len(COLOURS)]}"/>'
            f'<text x="{x + 13:.1f}" y="33" font-size="11">{escape(name)}</text>'
        )
        x += 24 + 6.2 * len(name)
    return out
