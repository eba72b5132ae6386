"""``swabline cards``: the printed command cards and badges read back as what they say."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from pyzbar import pyzbar

from agent.codes import CodeRules, CommandCode, classify
from swabline.cards import command_cards, read_staff_csv, render_html, staff_cards
from swabline.cli import main
from tests.browser import chromium

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_the_standard_sheet_has_every_command() -> None:
    commands = {c.code.command for c in command_cards()}
    assert commands == {"close", "undo", "test_kind", "mode", "pool_size", "result"}
    sizes = [c.code.pool_size for c in command_cards([2, 15]) if c.code.command == "pool_size"]
    assert sizes == [2, 15]


def test_labels_are_vietnamese_first_then_english(tmp_path: Path) -> None:
    out = tmp_path / "cards.html"
    assert main(["cards", "--out", str(out), "--staff", "nv-01:Nguyễn Văn Tâm"]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.index("ĐÓNG ỐNG MẪU") < page.index("Close pool")
    assert page.index("KẾT QUẢ: DƯƠNG TÍNH") < page.index("Result: positive")
    assert "Nguyễn Văn Tâm" in page
    assert page.count("<svg") == len(command_cards()) + 1
    # the staff name is printed, but only the id is in the QR
    assert "SWABLINE:STAFF:nv-01</p>" in page


def test_staff_from_a_csv(tmp_path: Path) -> None:
    csv_file = tmp_path / "staff.csv"
    csv_file.write_text("\ufeffstaff_id,name\nnv-01,Nguyễn Văn Tâm\n\nnv-02,Lê Thị Hoa\nnv-03\n")
    assert read_staff_csv(csv_file) == [
        ("nv-01", "Nguyễn Văn Tâm"),
        ("nv-02", "Lê Thị Hoa"),
        ("nv-03", ""),
    ]
    out = tmp_path / "badges.html"
    assert main(["cards", "--out", str(out), "--staff-csv", str(csv_file), "--no-commands"]) == 0
    assert out.read_text().count("<svg") == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--staff", "has space:Name"], "would not be read"),
        (["--pool-sizes", "0"], "1 to 50"),
        (["--pool-sizes", "five"], "comma-separated"),
        (["--no-commands"], "no cards"),
        (["--staff-csv", "/nonexistent/staff.csv"], "cannot read"),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "cards.html"
    assert main(["cards", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.browser
def test_every_printed_card_scans_back_as_its_command(tmp_path: Path, browser: object) -> None:
    cards = command_cards() + staff_cards([("nv-01", "Nguyễn Văn Tâm")])
    page_file = tmp_path / "cards.html"
    page_file.write_text(render_html(cards), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1000, "height": 1400})  # type: ignore[attr-defined]
    try:
        page.goto(page_file.as_uri())
        sections = page.locator("section.card")
        assert sections.count() == len(cards)
        rules = CodeRules.build()
        for i, card in enumerate(cards):
            png = sections.nth(i).locator(".qr svg").screenshot()
            decoded = pyzbar.decode(Image.open(io.BytesIO(png)).convert("L"))
            assert [d.type for d in decoded] == ["QRCODE"], card.en
            text = decoded[0].data.decode("utf-8")
            read = classify(text, rules)
            assert isinstance(read, CommandCode) and read == card.code, (card.en, text)
            # and the labels next to it say the same
            assert card.vi in sections.nth(i).inner_text()
    finally:
        page.close()


@pytest.mark.browser
def test_a_pdf_sheet(tmp_path: Path) -> None:
    out = tmp_path / "cards.pdf"
    assert main(["cards", "--out", str(out), "--staff", "nv-01:Nguyễn Văn Tâm"]) == 0
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 2  # 14 cards: more than one A4 page


def test_a_pdf_without_chromium_is_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("swabline.cards.find_chromium", lambda: None)
    assert main(["cards", "--out", str(tmp_path / "cards.pdf")]) == 2
    assert "needs Chromium" in capsys.readouterr().err
