"""A technician's day in a real headless Chromium against the real server: log in, make an
enrollment token on the page, get the card whose QR code scans back to it, a station enrolls
with it, then decommission the station after confirming; the broker refuses it at once."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import sync_playwright
from pyzbar.pyzbar import decode

from protocol.cards import parse_enrollment_card
from swabline.broker import Broker
from tests.browser import chromium
from tests.integration.harness import ServerProc, mqtt_connack, start_server

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


def post(server: ServerProc, path: str, body: dict[str, Any], *, auth: bool = True) -> Any:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {server.token}"
    req = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_log_in_make_a_token_print_its_card_and_decommission_the_station(
    tmp_path: Path, broker: Broker, sqlite_url: str
) -> None:
    admin_secret = tmp_path / "broker-admin.secret"
    admin_secret.write_text(broker.admin_password)
    enrollment = (
        f'\n[enrollment]\nbroker_host = "127.0.0.1"\nbroker_port = {broker.tls_port}\n'
        f'ca_file = "{broker.ca_file}"\nbroker_admin_password_file = "{admin_secret}"\n'
    )
    server = start_server(tmp_path / "server", broker, sqlite_url, extra=enrollment, workers=0)
    password = (tmp_path / "server" / "admin.password").read_text()
    try:
        (province,) = server.get("/api/organisations?kind=province")["items"]
        post(
            server,
            "/api/organisations",
            {
                "code": "TEST-TYT.1",
                "name": "Trạm Y tế Phường 1",
                "kind": "facility",
                "parent_id": province["id"],
                "facility_kind": "sampling",
            },
        )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(server.url + "/enrollment")
                page.fill("input[name=username]", "admin")
                page.fill("input[name=password]", password)
                page.click("button[type=submit]")
                page.wait_for_url(server.url + "/enrollment")
                assert page.locator("h1").inner_text() == "Đăng ký trạm quét"
                assert page.locator("header a[href='/enrollment']").inner_text() == "Đăng ký trạm"
                assert page.input_value("input[name=server_url]") == server.url
                page.select_option(
                    "select[name=facility_id]", label="Trạm Y tế Phường 1 (TEST-TYT.1)"
                )
                page.fill("input[name=station_name]", "Bàn 1")
                page.fill("input[name=wifi_ssid]", "Trạm Y tế")
                page.click("#create-token")
                token = page.locator("#token").inner_text()
                assert page.locator("h1").first.inner_text() == "Mã đăng ký đã được tạo"
                shot = page.locator("#card .qr svg").screenshot()
                (symbol,) = decode(Image.open(io.BytesIO(shot)).convert("L"))
                card = parse_enrollment_card(symbol.data.decode("ascii"))
                assert (card.server_url, card.token, card.wifi_ssid) == (
                    server.url,
                    token,
                    "Trạm Y tế",
                )

                # The station scans the card and enrolls (the part the station does).
                enrolled = post(server, "/api/enroll", {"token": token}, auth=False)
                station = enrolled["station_id"]
                assert station == "test-tyt-1-01"
                mqtt_password = enrolled["mqtt"]["password"]

                page.goto(server.url + "/enrollment")
                row = page.locator(f"#station-{station}")
                assert "Bàn 1" in row.inner_text() and "đang hoạt động" in row.inner_text()
                row.locator("a.danger").click()
                page.wait_for_url(f"{server.url}/enrollment/stations/{station}/decommission")
                assert mqtt_connack("127.0.0.1", broker.port, station, mqtt_password) == "Success"
                page.click("#confirm-decommission")
                page.wait_for_url(f"{server.url}/enrollment?decommissioned={station}")
                assert station in page.locator("#notice").inner_text()
                assert "đã thu hồi" in page.locator(f"#station-{station}").inner_text()
                page.click("#lang-switch")
                assert page.locator("h1").inner_text() == "Station enrollment"
            finally:
                browser.close()
        assert mqtt_connack("127.0.0.1", broker.port, station, mqtt_password) == "Not authorized"
    finally:
        server.stop()
