"""The enrollment API in-process (httpx ASGITransport) with real users, scopes and a real broker:
who may create, list, cancel, print and decommission what, and what the audit log says. The
printed card is read back by a real browser and a barcode decoder."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocol.cards import EnrollmentCard, parse_enrollment_card
from protocol.enrollment import EnrollResponse
from server.enrollment import BrokerEndpoint, EnrollmentService
from swabline.broker import Broker
from tests.browser import chromium
from tests.integration.harness import mqtt_connack
from tests.server.conftest import Env, build_env

pytestmark = pytest.mark.anyio

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def with_enrollment(env: Env, broker: Broker) -> Env:
    env.app.state.enrollment = EnrollmentService(
        broker_admin=broker.admin,
        endpoint=BrokerEndpoint("127.0.0.1", broker.tls_port, broker.ca_file.read_text()),
        max_token_lifetime=timedelta(days=7),
    )
    return env


@pytest.fixture
def enrolling(env: Env, broker: Broker) -> Env:
    return with_enrollment(env, broker)


async def make_token(env: Env, who: str, facility: str, **body: Any) -> httpx.Response:
    async with env.client(who) as c:
        return await c.post(
            "/api/enrollment-tokens", json={"facility_id": env.org[facility], **body}
        )


async def audit(env: Env, **params: str) -> list[dict[str, Any]]:
    async with env.client("admin") as c:
        r = await c.get("/api/audit", params={"page_size": "200", **params})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


async def test_roles_and_scopes_decide_who_may_make_tokens_for_which_facility(
    enrolling: Env,
) -> None:
    env = enrolling
    made = await make_token(env, "tech-cg", "HN-CG-TYT", expires_in_s=3600)
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    assert made.json()["facility_code"] == "HN-CG-TYT"
    # Another district's facility does not exist for a technician of Cầu Giấy; nor does a
    # facility outside their subtree (the lab, the district itself).
    for facility in ("HN-BD-TYT", "HN-LAB", "HN-CG"):
        r = await make_token(env, "tech-cg", facility)
        assert r.status_code == 404, (facility, r.text)
    # Roles without station.write are refused outright.
    for who in ("staff-bd", "ops", "lab"):
        r = await make_token(env, who, "HN-BD-TYT")
        assert r.status_code == 403, (who, r.text)
    # A facility manager enrolls into their own facility; an admin anywhere, but only into a
    # sampling facility.
    assert (await make_token(env, "mgr-bd", "HN-BD-TYT")).status_code == 201
    lab = await make_token(env, "admin", "HN-LAB")
    assert lab.status_code == 400 and "not a sampling facility" in lab.json()["detail"]
    district = await make_token(env, "admin", "HN-CG")
    assert district.status_code == 400 and "is a district" in district.json()["detail"]
    async with env.client("admin") as c:
        too_long = await c.post(
            "/api/enrollment-tokens",
            json={"facility_id": env.org["HN-CG-TYT"], "expires_in_s": 8 * 86400},
        )
        assert too_long.status_code == 400
    # Each sees the tokens of their scope only, never the token text.
    async with env.client("tech-cg") as c:
        mine = (await c.get("/api/enrollment-tokens")).json()
    assert [t["facility_code"] for t in mine] == ["HN-CG-TYT"]
    assert made.json()["token"] not in str(mine) and mine[0]["created_by"] == "tech-cg"
    async with env.client("admin") as c:
        every = (await c.get("/api/enrollment-tokens", params={"outstanding": "true"})).json()
    assert sorted(t["facility_code"] for t in every) == ["HN-BD-TYT", "HN-CG-TYT"]
    async with env.client("staff-bd") as c:
        assert (await c.get("/api/enrollment-tokens")).status_code == 403


async def test_a_station_enrolls_into_the_registry_and_is_decommissioned_in_scope(
    enrolling: Env, broker: Broker, tmp_path: Path
) -> None:
    env = enrolling
    token = (await make_token(env, "tech-cg", "HN-CG-TYT", station_name="Bàn 1")).json()
    async with env.client() as anonymous:
        got = await anonymous.post("/api/enroll", json={"token": token["token"], "hostname": "pi"})
        assert got.status_code == 200, got.text
        assert got.headers["cache-control"] == "no-store"
        answer = EnrollResponse.model_validate(got.json())
        again = await anonymous.post("/api/enroll", json={"token": token["token"]})
        assert again.status_code == 409 and "already used" in again.json()["detail"]
        forged = await anonymous.post("/api/enroll", json={"token": "x" * 24})
        assert forged.status_code == 401 and "unknown enrollment token" in forged.json()["detail"]
    assert (answer.station_id, answer.facility) == ("hn-cg-tyt-01", "HN-CG-TYT")
    assert answer.mqtt.port == broker.tls_port and answer.mqtt.ca_pem == broker.ca_file.read_text()
    ca = tmp_path / "ca.crt"
    ca.write_text(answer.mqtt.ca_pem)
    assert (
        mqtt_connack(
            "127.0.0.1", broker.tls_port, answer.station_id, answer.mqtt.password, ca_file=str(ca)
        )
        == "Success"
    )
    # The registry: the technician sees it at their facility, with its name.
    async with env.client("tech-cg") as c:
        station = (await c.get(f"/api/stations/{answer.station_id}")).json()
    assert (station["facility_id"], station["name"], station["active"]) == (
        env.org["HN-CG-TYT"],
        "Bàn 1",
        True,
    )
    async with env.client("staff-bd") as c:
        assert (await c.get(f"/api/stations/{answer.station_id}")).status_code == 404
    # Decommissioning: refused for a role without station.write and outside the scope.
    path = f"/api/stations/{answer.station_id}/decommission"
    async with env.client("staff-cg") as c:
        assert (await c.post(path)).status_code == 403
    async with env.client("mgr-bd") as c:
        assert (await c.post(path)).status_code == 404
    async with env.client("tech-cg") as c:
        assert (await c.post(path)).status_code == 204
        assert (await c.get(f"/api/stations/{answer.station_id}")).json()["active"] is False
        revive = await c.patch(f"/api/stations/{answer.station_id}", json={"active": True})
        assert revive.status_code == 409 and "enroll a new station" in revive.json()["detail"]
        assert (await c.post("/api/stations/st-2/decommission")).status_code == 404  # not enrolled
    assert mqtt_connack("127.0.0.1", broker.port, answer.station_id, answer.mqtt.password) == (
        "Not authorized"
    )
    entries = await audit(env, object_id=answer.station_id)
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("station.decommission", "tech-cg"),
        ("station.enroll", f"enrollment-token:{token['id']}"),
    ]
    decommissioned, enrolled = entries
    assert enrolled["remote_addr"] == "127.0.0.1" and enrolled["before"] is None
    assert enrolled["organisation_id"] == env.org["HN-CG-TYT"]
    assert decommissioned["user_id"] == env.user_id["tech-cg"]
    assert (decommissioned["before"]["active"], decommissioned["after"]["active"]) == (True, False)
    (created,) = await audit(env, action="enrollment_token.create")
    assert (created["actor"], created["object_id"]) == ("tech-cg", str(token["id"]))
    assert token["token"] not in str(created)


async def test_reprovisioning_and_cancelling_in_scope(enrolling: Env) -> None:
    env = enrolling
    first = (await make_token(env, "tech-cg", "HN-CG-TYT")).json()
    async with env.client() as anonymous:
        enrolled = (await anonymous.post("/api/enroll", json={"token": first["token"]})).json()
    async with env.client("tech-cg") as c:
        again = await c.post("/api/enrollment-tokens", json={"station_id": enrolled["station_id"]})
        assert again.status_code == 201 and again.json()["facility_id"] == env.org["HN-CG-TYT"]
        assert (await c.post("/api/enrollment-tokens", json={})).status_code == 400
    async with env.client("mgr-bd") as c:  # not their station
        r = await c.post("/api/enrollment-tokens", json={"station_id": enrolled["station_id"]})
        assert r.status_code == 404
        bd = (
            await c.post("/api/enrollment-tokens", json={"facility_id": env.org["HN-BD-TYT"]})
        ).json()
    async with env.client("tech-cg") as c:
        assert (await c.post(f"/api/enrollment-tokens/{bd['id']}/cancel")).status_code == 404
        cancelled = await c.post(f"/api/enrollment-tokens/{again.json()['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        used = await c.post(f"/api/enrollment-tokens/{first['id']}/cancel")
        assert used.status_code == 409
    async with env.client() as anonymous:
        r = await anonymous.post("/api/enroll", json={"token": again.json()["token"]})
        assert r.status_code == 410 and "cancelled" in r.json()["detail"]
    (entry,) = await audit(env, action="enrollment_token.cancel")
    assert entry["actor"] == "tech-cg" and entry["after"]["cancelled_at"] is not None


async def test_cards_are_printed_only_for_usable_tokens_in_scope(enrolling: Env) -> None:
    env = enrolling
    cg = (await make_token(env, "tech-cg", "HN-CG-TYT")).json()["token"]
    bd = (await make_token(env, "mgr-bd", "HN-BD-TYT")).json()["token"]
    card = {"server_url": "https://swabline.soyte.example.vn", "wifi_ssid": "Trạm 5"}
    async with env.client("tech-cg") as c:
        ok = await c.post("/api/enrollment-cards", json={**card, "token": cg})
        assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
        assert "Trạm Y tế Cầu Giấy (HN-CG-TYT)" in ok.text and cg in ok.text
        other = await c.post("/api/enrollment-cards", json={**card, "token": bd})
        assert other.status_code == 404
        bad = await c.post(
            "/api/enrollment-cards", json={**card, "token": cg, "server_url": "ftp://x"}
        )
        assert bad.status_code == 400 and "not an http(s) URL" in bad.json()["detail"]
    async with env.client() as anonymous:
        assert (await anonymous.post("/api/enroll", json={"token": cg})).status_code == 200
        assert (
            await anonymous.post("/api/enrollment-cards", json={**card, "token": cg})
        ).status_code == 401
    async with env.client("tech-cg") as c:
        used = await c.post("/api/enrollment-cards", json={**card, "token": cg})
        assert used.status_code == 409 and "already used" in used.json()["detail"]


async def test_a_web_session_needs_the_csrf_header(enrolling: Env) -> None:
    from tests.server.conftest import PASSWORD

    async with enrolling.client() as c:
        login = await c.post("/api/auth/login", json={"username": "tech-cg", "password": PASSWORD})
        body = {"facility_id": enrolling.org["HN-CG-TYT"]}
        assert (await c.post("/api/enrollment-tokens", json=body)).status_code == 403
        ok = await c.post(
            "/api/enrollment-tokens",
            json=body,
            headers={"X-CSRF-Token": login.json()["csrf_token"]},
        )
        assert ok.status_code == 201


async def test_a_server_without_enrollment_enrolls_no_one(env: Env) -> None:
    async with env.client("admin") as c:
        r = await make_token(env, "admin", "HN-CG-TYT")
        assert r.status_code == 404 and "does not enroll stations" in r.json()["detail"]
        assert (await c.post("/api/enroll", json={"token": "y" * 24})).status_code == 404
        assert (await c.get("/api/enrollment-tokens")).status_code == 404


@pytest.fixture
def sqlite_env(sqlite_url: str, broker: Broker) -> Iterator[Env]:
    e = with_enrollment(build_env(sqlite_url), broker)
    yield e
    e.engine.dispose()


@pytest.mark.browser
async def test_the_printed_card_scans_back_to_the_same_card(
    sqlite_env: Env, tmp_path: Path
) -> None:
    from PIL import Image
    from playwright.async_api import async_playwright
    from pyzbar.pyzbar import decode

    token = (await make_token(sqlite_env, "tech-cg", "HN-CG-TYT")).json()["token"]
    card = EnrollmentCard("https://swabline.soyte.example.vn", token, "Trạm Y tế 5", "mật-khẩu")
    async with sqlite_env.client("tech-cg") as c:
        page_html = await c.post(
            "/api/enrollment-cards",
            json={
                "server_url": card.server_url,
                "token": card.token,
                "wifi_ssid": card.wifi_ssid,
                "wifi_password": card.wifi_password,
            },
        )
    assert page_html.status_code == 200
    html = tmp_path / "card.html"
    html.write_text(page_html.text)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(html.as_uri())
            assert "Thẻ đăng ký trạm quét" in await page.inner_text("h1")
            shot = await page.locator(".qr svg").screenshot()
        finally:
            await browser.close()
    (symbol,) = decode(Image.open(io.BytesIO(shot)).convert("L"))
    assert parse_enrollment_card(symbol.data.decode("ascii")) == card


def test_no_input_makes_the_enrollment_api_fail(env: Env, broker: Broker) -> None:
    """schemathesis over the enrollment operations with enrollment configured (the whole-API
    fuzz test runs them on a server that does not enroll)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    with_enrollment(env, broker)
    schema = schemathesis.openapi.from_asgi("/openapi.json", env.app)
    headers = {"Authorization": f"Bearer {env.token['admin']}"}
    operations = [
        op for op in (r.ok() for r in schema.get_all_operations()) if "enrollment" in op.tags
    ]
    assert len(operations) == 6
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            causes = getattr(exc, "exceptions", [exc])
            failures.append(f"{operation.label}: {'; '.join(repr(c) for c in causes)}")
    assert failures == []
