"""A person logs in to the real server in a real headless Chromium and sees the dashboard."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from swabline.broker import Broker
from tests.browser import chromium
from tests.integration.harness import start_server

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_log_in_see_the_dashboard_switch_language_and_log_out(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    server = start_server(tmp_path / "server", broker, sqlite_url, workers=1)
    password = (tmp_path / "server" / "admin.password").read_text()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(server.url + "/users")
            assert "/login" in page.url
            assert page.locator("h1").inner_text() == "Đăng nhập"
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", "not the password")
            page.click("button[type=submit]")
            assert page.locator("#login-error").inner_text() == "Sai tên đăng nhập hoặc mật khẩu."
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(server.url + "/users")
            assert "admin" in page.locator("#users").inner_text()
            assert "Quản trị tỉnh @ TEST" in page.locator("#users").inner_text()
            cookie = next(c for c in page.context.cookies() if c["name"] == "swabline_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            page.click("#lang-switch")
            assert page.locator("h1").inner_text() == "Users"
            page.goto(server.url + "/")
            assert page.locator("h2").first.inner_text() == "Stations"
            page.click("text=Log out")
            page.wait_for_url(server.url + "/login")
            page.goto(server.url + "/")
            assert "/login" in page.url
            browser.close()
    finally:
        server.stop()
