"""Enrollment over HTTP (in-process), the admin routes behind an injected admin check, and the
printed card read back by a real browser and a barcode decoder."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Header, HTTPException
from sqlalchemy import Engine

from protocol.cards import EnrollmentCard, parse_enrollment_card
from protocol.enrollment import EnrollResponse
from server.enrollment_api import BrokerEndpoint, enrollment_router
from server.web import create_app
from swabline.broker import Broker
from tests.integration.harness import mqtt_connack

ADMIN_KEY = "let-me-in"


def require_admin(x_test_admin: str | None = Header(default=None)) -> None:
    """Stands in for the web app's authentication, which the lead wires in."""
    if x_test_admin != ADMIN_KEY:
        raise HTTPException(status_code=401, detail="admins only")


def app(engine: Engine, broker: Broker, *, admin: bool) -> Any:
    return create_app(
        engine,
        routers=[
            enrollment_router(
                engine=engine,
                broker_admin=broker.admin,
                endpoint=BrokerEndpoint(
                    host="127.0.0.1", port=broker.tls_port, ca_pem=broker.ca_file.read_text()
                ),
                require_admin=require_admin if admin else None,
            )
        ],
    )


def call(asgi: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_admin_makes_a_token_and_a_station_enrolls_with_it(
    engine: Engine, broker: Broker, tmp_path: Path
) -> None:
    web = app(engine, broker, admin=True)
    assert call(web, "POST", "/api/enrollment-tokens", json={"facility": "qn"}).status_code == 401
    made = call(
        web,
        "POST",
        "/api/enrollment-tokens",
        json={"facility": "qn", "expires_in_s": 3600},
        headers={"X-Test-Admin": ADMIN_KEY},
    )
    assert made.status_code == 201
    token = made.json()["token"]
    got = call(web, "POST", "/api/enroll", json={"token": token, "hostname": "pi"})
    assert got.status_code == 200, got.text
    answer = EnrollResponse.model_validate(got.json())
    assert answer.station_id == "qn-01" and answer.mqtt.port == broker.tls_port
    assert answer.mqtt.ca_pem == broker.ca_file.read_text()
    ca = tmp_path / "ca.crt"
    ca.write_text(answer.mqtt.ca_pem)
    assert (
        mqtt_connack("127.0.0.1", broker.tls_port, "qn-01", answer.mqtt.password, ca_file=str(ca))
        == "Success"
    )
    again = call(web, "POST", "/api/enroll", json={"token": token})
    assert again.status_code == 409 and "already used" in again.json()["detail"]
    forged = call(web, "POST", "/api/enroll", json={"token": "x" * 24})
    assert forged.status_code == 401 and "unknown enrollment token" in forged.json()["detail"]
    listed = call(web, "GET", "/api/enrollment-tokens", headers={"X-Test-Admin": ADMIN_KEY})
    assert [(t["facility"], t["used_by_station"]) for t in listed.json()] == [("qn", "qn-01")]
    assert token not in listed.text
    gone = call(
        web, "POST", "/api/stations/qn-01/decommission", headers={"X-Test-Admin": ADMIN_KEY}
    )
    assert gone.status_code == 204
    assert mqtt_connack("127.0.0.1", broker.port, "qn-01", answer.mqtt.password) == (
        "Not authorized"
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_an_admin_check_only_enrollment_itself_exists(
    engine: Engine, broker: Broker
) -> None:
    web = app(engine, broker, admin=False)
    assert call(web, "POST", "/api/enrollment-tokens", json={"facility": "qn"}).status_code == 404
    assert call(web, "POST", "/api/stations/x/decommission").status_code == 404
    assert call(web, "POST", "/api/enroll", json={"token": "y" * 24}).status_code == 401


@pytest.mark.browser
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_printed_card_scans_back_to_the_same_card(
    engine: Engine, broker: Broker, tmp_path: Path
) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from pyzbar.pyzbar import decode

    card = EnrollmentCard("https://swabline.soyte.example.vn", "A" * 24, "Trạm Y tế 5", "mật-khẩu")
    page_html = call(
        app(engine, broker, admin=True),
        "POST",
        "/api/enrollment-cards",
        json={
            "server_url": card.server_url,
            "token": card.token,
            "wifi_ssid": card.wifi_ssid,
            "wifi_password": card.wifi_password,
        },
        headers={"X-Test-Admin": ADMIN_KEY},
    )
    assert page_html.status_code == 200
    html = tmp_path / "card.html"
    html.write_text(page_html.text)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(html.as_uri())
            assert "Thẻ đăng ký trạm quét" in page.inner_text("h1")
            shot = page.locator(".qr svg").screenshot()
        finally:
            browser.close()
    (symbol,) = decode(Image.open(io.BytesIO(shot)).convert("L"))
    assert parse_enrollment_card(symbol.data.decode("ascii")) == card
