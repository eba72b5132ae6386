"""``swabline cards``: the printable sheet of command cards and staff badges (HTML or PDF).

Every card's QR holds the text ``agent.codes.card_text`` makes, and is checked against the
station's own parser before it is printed. QR codes are inline SVG made with segno (never Micro
QR, which many scanners cannot read). A PDF is printed from the HTML by a headless Chromium when
one is installed.
"""

from __future__ import annotations

import argparse
import csv
import html
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import segno

from agent.codes import CodeRules, CommandCode, card_text, classify


class CardsError(ValueError):
    """The card sheet cannot be made (bad staff list, no Chromium for a PDF, ...)."""


@dataclass(frozen=True, slots=True)
class Card:
    """One printed card: its QR text and its labels (Vietnamese first, English below)."""

    code: CommandCode
    vi: str
    en: str
    hint_vi: str
    hint_en: str
    tone: str = "plain"

    @property
    def text(self) -> str:
        return card_text(self.code)


_RESULT_LABELS = {
    "positive": ("DƯƠNG TÍNH", "positive", "bad"),
    "negative": ("ÂM TÍNH", "negative", "good"),
    "invalid": ("KHÔNG HỢP LỆ", "invalid", "warn"),
}


def command_cards(pool_sizes: Iterable[int] = (5, 10, 20)) -> list[Card]:
    """The standard command cards of a station."""
    cards = [
        Card(
            CommandCode("close"),
            "ĐÓNG ỐNG MẪU",
            "Close pool",
            "Đóng ống đang mở (không cần đủ người).",
            "Closes the open tube before it is full.",
        ),
        Card(
            CommandCode("undo"),
            "HỦY LẦN QUÉT CUỐI",
            "Undo last scan",
            "Bỏ người vừa quét khỏi ống; ống chưa có ai thì bỏ ống.",
            "Takes the last person out; an empty tube is taken back.",
            "warn",
        ),
        Card(
            CommandCode("test_kind", test_kind="rt_pcr"),
            "XÉT NGHIỆM RT-PCR",
            "Test kind: RT-PCR",
            "Áp dụng từ ống tiếp theo.",
            "Applies from the next tube.",
        ),
        Card(
            CommandCode("test_kind", test_kind="rapid_antigen"),
            "TEST NHANH KHÁNG NGUYÊN",
            "Test kind: rapid antigen",
            "Áp dụng từ ống tiếp theo.",
            "Applies from the next tube.",
        ),
        Card(
            CommandCode("mode", mode="single"),
            "LẤY MẪU ĐƠN",
            "Single-sample mode",
            "Mỗi ống một người, từ ống tiếp theo.",
            "One person per tube, from the next tube.",
        ),
        Card(
            CommandCode("mode", mode="pool"),
            "LẤY MẪU GỘP",
            "Pooled mode",
            "Gộp nhiều người vào một ống, từ ống tiếp theo.",
            "Several persons per tube, from the next tube.",
        ),
    ]
    for size in pool_sizes:
        cards.append(
            Card(
                CommandCode("pool_size", pool_size=size),
                f"GỘP {size} MẪU",
                f"Pool of {size}",
                f"Mẫu gộp {size} người, từ ống tiếp theo.",
                f"Pools of {size} persons, from the next tube.",
            )
        )
    for value, (vi, en, tone) in _RESULT_LABELS.items():
        cards.append(
            Card(
                CommandCode("result", result=value),  # type: ignore[arg-type]
                f"KẾT QUẢ: {vi}",
                f"Result: {en}",
                "Test nhanh: quét sau ống (và người) của nó.",
                "Rapid antigen: scan after its tube (and person).",
                tone,
            )
        )
    return cards


def staff_cards(staff: Iterable[tuple[str, str]]) -> list[Card]:
    """Badges for ``(staff_id, name)`` pairs. Only the id goes into the QR: a keyboard-mode
    scanner cannot type a Vietnamese name; the server knows the name from the id."""
    cards = []
    for staff_id, name in staff:
        card = Card(
            CommandCode("sign_in", staff_id=staff_id),
            name or staff_id,
            f"Staff badge {staff_id}",
            "Quét khi bắt đầu ca lấy mẫu.",
            "Scan when starting a sampling shift.",
            "staff",
        )
        cards.append(card)
    return cards


def read_staff_csv(path: Path) -> list[tuple[str, str]]:
    """``staff_id,name`` rows (a header row naming ``staff_id`` is skipped)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    except OSError as exc:
        raise CardsError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CardsError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    if rows and rows[0][0].strip().lower() in ("staff_id", "id"):
        rows = rows[1:]
    return [(row[0].strip(), row[1].strip() if len(row) > 1 else "") for row in rows]


def check(cards: Sequence[Card]) -> None:
    """Every card must read back, through the station's parser, as the card it claims to be."""
    rules = CodeRules.build()
    for card in cards:
        try:
            text = card.text
        except ValueError as exc:
            raise CardsError(str(exc)) from None
        if classify(text, rules) != card.code:
            raise CardsError(f"card {text!r} would not be read as {card.en!r} by a station")


def render_html(cards: Sequence[Card], *, title: str = "Swabline") -> str:
    """The printable sheet: A4, cards in a grid, each with its QR as inline SVG."""
    check(cards)
    parts = []
    for card in cards:
        qr = segno.make(card.text, error="m", micro=False)
        svg = qr.svg_inline(scale=5, border=4, omitsize=True)
        parts.append(
            f'<section class="card {card.tone}">'
            f'<div class="qr">{svg}</div>'
            f'<h2 lang="vi">{html.escape(card.vi)}</h2>'
            f'<p class="en" lang="en">{html.escape(card.en)}</p>'
            f'<p class="hint" lang="vi">{html.escape(card.hint_vi)}</p>'
            f'<p class="hint en" lang="en">{html.escape(card.hint_en)}</p>'
            f'<p class="code">{html.escape(card.text)}</p>'
            "</section>"
        )
    return _PAGE.format(title=html.escape(title), cards="\n".join(parts))


_PAGE = """<!doctype html>
<html lang="vi">
<head>
<meta charset="utf-8">
<title>{title}: thẻ lệnh / command cards</title>
<style>
@page {{ size: A4; margin: 10mm; }}
body {{ font-family: "DejaVu Sans", "Noto Sans", Arial, sans-serif; margin: 0; }}
header {{ margin: 0 0 4mm; font-size: 10pt; }}
main {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 4mm; }}
.card {{ border: 0.6mm solid #000; border-radius: 3mm; padding: 3mm; text-align: center;
  break-inside: avoid; page-break-inside: avoid; }}
.card.bad {{ border-color: #c00; border-width: 1.2mm; }}
.card.good {{ border-color: #080; border-width: 1.2mm; }}
.card.warn {{ border-color: #c80; border-width: 1.2mm; }}
.card.staff {{ border-style: double; border-width: 1.6mm; }}
.qr svg {{ width: 42mm; height: 42mm; }}
h2 {{ font-size: 13pt; margin: 1mm 0 0; }}
p {{ margin: 0.5mm 0; }}
.en {{ font-size: 10pt; color: #333; }}
.hint {{ font-size: 8pt; }}
.code {{ font-family: "DejaVu Sans Mono", monospace; font-size: 6.5pt; color: #555; }}
</style>
</head>
<body>
<header><strong>{title}</strong> &mdash; thẻ lệnh cho trạm quét / command cards for scanner
stations. Quét thẻ bằng máy quét của trạm / scan a card with the station's scanner.</header>
<main>
{cards}
</main>
</body>
</html>
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def print_pdf(html_text: str, out: Path, *, chromium: str | None = None) -> None:
    """Print ``html_text`` to the PDF ``out`` with a headless Chromium."""
    exe = chromium or find_chromium()
    if exe is None:
        raise CardsError("a PDF needs Chromium (apt install chromium); or write --out FILE.html")
    with tempfile.TemporaryDirectory(prefix="swabline-cards-") as tmp:
        page = Path(tmp) / "cards.html"
        page.write_text(html_text, encoding="utf-8")
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp}/profile",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out.resolve()}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CardsError(f"Chromium failed: {exc}") from None
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise CardsError(f"Chromium could not print the PDF (exit {done.returncode}) {detail[0]}")


def _pool_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CardsError("--pool-sizes: a comma-separated list of numbers") from None
    if any(not 1 <= n <= 50 for n in sizes):
        raise CardsError("--pool-sizes: pool sizes are 1 to 50")
    return sizes


def run(args: argparse.Namespace) -> int:
    try:
        staff = [tuple(s.split(":", 1)) if ":" in s else (s, "") for s in args.staff]
        if args.staff_csv is not None:
            staff.extend(read_staff_csv(args.staff_csv))
        cards = [] if args.no_commands else command_cards(_pool_sizes(args.pool_sizes))
        cards += staff_cards((str(i).strip(), str(n).strip()) for i, n in staff)
        if not cards:
            raise CardsError("no cards to print")
        sheet = render_html(cards, title=args.title)
        if args.out.suffix.lower() == ".pdf":
            print_pdf(sheet, args.out, chromium=args.chromium)
        else:
            args.out.write_text(sheet, encoding="utf-8")
    except CardsError as exc:
        print(f"swabline cards: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"swabline cards: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(cards)} cards")
    return 0
