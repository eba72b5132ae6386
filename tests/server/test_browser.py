"""The pages people use, in a real headless Chromium (Playwright) against a real uvicorn server
on 127.0.0.1: log in, receive and enter a result by typing a barcode + Enter into the scan
field, look a result up as a citizen, declare oneself on a phone and read the QR back, and
download reports."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from openpyxl import load_workbook
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright
from pyzbar.pyzbar import decode
from sqlalchemy.orm import Session

from agent.codes import CodeRules, PersonCode
from agent.codes import classify as classify_code
from server.access import system_principal
from server.lab import receive_tube
from server.results import enter_result
from swabline.broker import free_port
from tests.browser import chromium
from tests.server.conftest import PASSWORD, Env, build_env
from tests.server.test_lab_web import health_qr_person, sample, sample_persons

pytestmark = pytest.mark.browser

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("SWABLINE_SCREENSHOTS")
"""Set to a folder to keep screenshots of every page the tests visit (for a look by eye)."""


class LiveServer:
    def __init__(self, env: Env) -> None:
        self.env = env
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    env = build_env(f"sqlite:///{tmp_path / 'swabline.db'}")
    sample(env, "st-1", "T-BD-7", [("079303005555", "Phạm Thu Hà", "1999-04-30")], seq0=100)
    with LiveServer(env) as server:
        yield server
    env.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=FLAGS, headless=True)
        yield b
        b.close()


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def login(page: Page, live: LiveServer, username: str) -> None:
    page.goto(f"{live.url}/lab")
    assert "/login" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/lab")


def test_lab_staff_receive_a_box_and_enter_a_result_by_scanning(
    live: LiveServer, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    login(page, live, "lab")
    shot(page, "lab-home")
    # Reception: the box label, then each tube, typed by the scanner with Enter.
    page.fill("#receive-form input[name=code]", "THUNG-77")
    page.press("#receive-form input[name=code]", "Enter")
    page.wait_for_selector("#scan-form")
    scan = page.locator("#scan")
    assert scan.evaluate("e => e === document.activeElement")
    scan.type("T-BD-7")
    scan.press("Enter")
    page.wait_for_function("document.getElementById('n-received').textContent === '1'")
    assert page.locator("#scan-panel").get_attribute("data-outcome") == "ok"
    assert "T-BD-7: Đã nhận" in page.locator("#scan-msg").inner_text()
    scan.type("T-UNKNOWN")
    scan.press("Enter")
    page.wait_for_function("document.getElementById('scan-panel').dataset.outcome === 'bad'")
    assert "Ống chưa có dữ liệu từ trạm lấy mẫu" in page.locator("#scan-msg").inner_text()
    # The field kept the focus for the next tube.
    assert scan.evaluate("e => e === document.activeElement")
    shot(page, "lab-reception")

    # Result entry: scan the tube, choose the result, confirm.
    page.goto(f"{live.url}/lab/results")
    scan = page.locator("#scan")
    scan.type("T-NOPE")
    scan.press("Enter")
    page.wait_for_function("document.getElementById('scan-panel').dataset.outcome === 'bad'")
    assert page.locator("#scan-msg").inner_text() == "T-NOPE: Không tìm thấy ống này"
    scan.type("T-BD-7")
    scan.press("Enter")
    page.wait_for_selector("#tube-panel:not([hidden])")
    assert page.locator("#tube-persons").inner_text() == "1"
    page.click("#v-negative")
    assert page.locator("#confirm-text").inner_text() == "T-BD-7: Âm tính?"
    shot(page, "result-confirm")
    page.click("#confirm-btn")
    page.wait_for_function("document.getElementById('scan-msg').textContent.includes('Đã lưu')")
    assert page.locator("#scan-msg").inner_text() == "T-BD-7: Âm tính — Đã lưu kết quả"
    assert page.locator("#tube-panel").is_hidden()
    assert page.locator("#scan").evaluate("e => e === document.activeElement")
    shot(page, "result-saved")
    # A different value for the same tube asks for a reason.
    scan.type("T-BD-7")
    scan.press("Enter")
    page.wait_for_selector("#tube-panel:not([hidden])")
    page.click("#v-positive")
    assert page.locator("#reason-row").is_visible()
    page.fill("#reason", "nhầm giếng")
    page.click("#confirm-btn")
    page.wait_for_function("document.getElementById('scan-msg').textContent.includes('Dương')")
    page.goto(f"{live.url}/lab/tubes/T-BD-7")
    assert "nhầm giếng" in page.content()
    shot(page, "tube-page")
    page.close()


def test_a_citizen_looks_up_a_result_and_checks_the_slip(
    live: LiveServer, browser: Browser
) -> None:
    staff = browser.new_page()
    login(staff, live, "lab")
    staff.fill("#receive-form input[name=code]", "THUNG-78")
    staff.press("#receive-form input[name=code]", "Enter")
    staff.wait_for_selector("#scan-form")
    staff.locator("#scan").type("T-BD-7")
    staff.locator("#scan").press("Enter")
    staff.wait_for_function("document.getElementById('n-received').textContent === '1'")
    staff.goto(f"{live.url}/lab/tubes/T-BD-7")
    staff.check("input[name=value][value=negative]")
    staff.click("#result-form button[type=submit]")
    staff.wait_for_selector("#saved")
    staff.close()

    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(f"{live.url}/lookup")
    phone.fill("#id_number", "079303005555")
    phone.fill("#birth_date", "1999-04-30")
    phone.click("#lookup-submit")
    phone.wait_for_selector("#answer[data-status=found]")
    assert phone.locator("#person-name").inner_text() == "Phạm Thu Hà"
    assert "Âm tính" in phone.locator("#answer").inner_text()
    shot(phone, "lookup-found-phone")
    verify_url = phone.locator(".slip-url").first.text_content()
    assert verify_url is not None and "/v/" in verify_url
    # The slip's QR, as printed, reads back as the verify address.
    phone.emulate_media(media="print")
    shot(phone, "lookup-slip-print")
    qr = phone.locator(".slip-qr svg").first
    image = Image.open(io.BytesIO(qr.screenshot()))
    assert [d.data.decode() for d in decode(image)] == [verify_url.strip()]
    phone.emulate_media(media="screen")
    phone.goto(verify_url.strip())
    assert phone.locator("#verify").get_attribute("data-valid") == "yes"
    assert phone.locator("#masked-name").inner_text() == "P*** T** H*"
    shot(phone, "verify-phone")
    # In English, and the unknown-ID answer.
    phone.goto(f"{live.url}/lookup?lang=en")
    phone.fill("#id_number", "079303009999")
    phone.fill("#birth_date", "1999-04-30")
    phone.click("#lookup-submit")
    phone.wait_for_selector("#answer[data-status=none]")
    assert "No result was found for these details" in phone.locator("#answer").inner_text()
    shot(phone, "lookup-none-en")
    phone.close()


def test_a_person_without_the_app_declares_on_a_phone_and_gets_a_readable_qr(
    live: LiveServer, browser: Browser
) -> None:
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(f"{live.url}/declare")
    assert phone.locator("h1").inner_text() == "Khai báo để nhận mã QR cá nhân"
    phone.fill("#name", "Võ Thị Sáu")
    phone.fill("#birth_date", "1987-09-02")
    phone.select_option("#sex", "female")
    phone.fill("#document", "079187001234")
    phone.fill("#phone", "0912345678")
    shot(phone, "declare-form-phone")
    phone.click("#declare-submit")
    phone.wait_for_selector("#card")
    shot(phone, "declare-card-phone")
    payload = phone.locator("#qr").get_attribute("data-payload")
    assert payload is not None and payload.startswith("******001234|VO THI SAU|1987-**-**|0|SW")
    image = Image.open(io.BytesIO(phone.locator("#qr svg").screenshot()))
    assert [d.data.decode() for d in decode(image)] == [payload]
    code = phone.locator("#lookup-code").inner_text()
    assert len(code.replace("-", "")) == 10
    # A station's own parser accepts the code as read from the screen.
    scanned = classify_code(payload, CodeRules.build())
    assert isinstance(scanned, PersonCode) and scanned.person.key_type == "qid"
    assert scanned.person.key == payload.split("|")[4]
    phone.close()


def test_a_person_sampled_with_a_health_qr_looks_up_by_qid_on_a_phone(
    live: LiveServer, browser: Browser
) -> None:
    env = live.env
    sample_persons(
        env,
        "st-1",
        "T-QR-9",
        [health_qr_person("QX7H2K9M4P", "******001234", "2003-**-**", "TRAN THI MAI")],
        seq0=500,
    )
    with Session(env.engine) as db, db.begin():
        receive_tube(db, tube_code="T-QR-9", lab_id=env.org["HN-LAB"])
        enter_result(
            db,
            system_principal("test"),
            env.app.state.lab.ctx,
            tube_code="T-QR-9",
            value="negative",
        )
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(f"{live.url}/lookup")
    assert "mã QID" in phone.locator("label:has(#id_number)").inner_text()
    phone.fill("#id_number", "QX7H2K9M4P")
    phone.fill("#birth_date", "2003-08-15")  # the QR carries the year only
    phone.click("#lookup-submit")
    phone.wait_for_selector("#answer[data-status=found]")
    assert phone.locator("#person-name").inner_text() == "TRAN THI MAI"
    assert "Âm tính" in phone.locator("#answer").inner_text()
    shot(phone, "lookup-qid-phone")
    # Another year: the same answer as for a QID nobody has.
    phone.fill("#id_number", "QX7H2K9M4P")
    phone.fill("#birth_date", "2004-08-15")
    phone.click("#lookup-submit")
    phone.wait_for_selector("#answer[data-status=none]")
    # A form sent around the page's own limits gets a page in Vietnamese, not JSON.
    phone.goto(f"{live.url}/lookup")
    phone.evaluate("document.getElementById('id_number').removeAttribute('maxlength')")
    phone.fill("#id_number", "9" * 80)
    phone.fill("#birth_date", "2003-08-15")
    phone.click("#lookup-submit")
    phone.wait_for_selector("#error-message")
    assert "Thông tin gửi lên không hợp lệ" in phone.locator("#error-message").inner_text()
    shot(phone, "lookup-too-long-phone")
    phone.close()


def test_a_manager_downloads_the_weekly_report(live: LiveServer, browser: Browser) -> None:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    login(page, live, "admin")
    page.goto(f"{live.url}/reports?period=week&day=2026-09-21")
    assert page.locator("#total-samples").inner_text() == "3"
    assert page.locator("svg.chart").count() >= 3
    shot(page, "reports")
    with page.expect_download() as info:
        page.click("#download-xlsx")
    download: Any = info.value
    assert download.suggested_filename == "swabline-HN-week-2026-W39.xlsx"
    book = load_workbook(io.BytesIO(Path(download.path()).read_bytes()))
    summary = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    province = next(r for r in summary if r[2] == "HN")
    assert province[5] == 3
    with page.expect_download() as info:
        page.click("#download-csv")
    text = Path(info.value.path()).read_text(encoding="utf-8-sig")
    assert text.startswith("Kỳ báo cáo,Cấp,Mã,Đơn vị")
    context.close()
