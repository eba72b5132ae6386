"""The enrollment page in-process: a technician logs in, makes a token and its card, sees it
outstanding, cancels one, re-provisions and decommissions a station after confirming; only in
scope, only with CSRF, Vietnamese first."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.models import EnrollmentTokenRow
from server.web.enrollment_pages import LIFETIMES
from server.web.i18n import TEXTS
from swabline.broker import Broker
from tests.integration.harness import mqtt_connack
from tests.server.conftest import PASSWORD, Env, build_env
from tests.server.test_enrollment_api import with_enrollment

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(sqlite_url: str, broker: Broker) -> Iterator[Env]:
    """The page shows what the enrollment functions return (tested on both databases)."""
    e = with_enrollment(build_env(sqlite_url), broker)
    yield e
    e.engine.dispose()


async def logged_in(c: httpx.AsyncClient, username: str) -> str:
    r = await c.post("/login", data={"username": username, "password": PASSWORD, "next": "/"})
    assert r.status_code == 303
    page = await c.get("/enrollment")
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def tokens_in_db(env: Env) -> int:
    with Session(env.engine) as db:
        return db.scalar(select(func.count()).select_from(EnrollmentTokenRow)) or 0


def outstanding_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="token-(\d+)">', html)


async def test_a_technician_makes_a_token_and_its_card_on_the_page(env: Env) -> None:
    async with env.client() as c:
        assert (await c.get("/enrollment")).status_code == 303  # to the login
        csrf = await logged_in(c, "tech-cg")
        home = await c.get("/")
        assert '<a href="/enrollment">Đăng ký trạm</a>' in home.text
        page = await c.get("/enrollment")
        assert "Đăng ký trạm quét" in page.text and 'lang="vi"' in page.text
        facilities = page.text.split('id="facilities"')[1].split("</table>")[0]
        assert "HN-CG-TYT" in facilities and "hn-cg-tyt-01" in facilities
        assert "HN-BD-TYT" not in page.text and "HN-LAB" not in page.text
        form = {
            "facility_id": str(env.org["HN-CG-TYT"]),
            "station_name": "Bàn 1 - cổng trường",
            "lifetime": "8h",
            "server_url": "https://swabline.soyte.example.vn",
            "wifi_ssid": "Tram Y te",
            "wifi_password": "mat-khau-wifi",
        }
        forged = await c.post("/enrollment/tokens", data={**form, "csrf_token": "forged"})
        assert forged.status_code == 403 and tokens_in_db(env) == 0
        made = await c.post("/enrollment/tokens", data={**form, "csrf_token": csrf})
        assert made.status_code == 201, made.text
        assert made.headers["cache-control"] == "no-store"
        token = re.search(r'<code id="token">([^<]+)</code>', made.text)
        assert token is not None
        card = made.text.split('<div id="card">')[1]
        assert "Thẻ đăng ký trạm quét" in card and "<svg" in card
        assert "Trạm Y tế Cầu Giấy (HN-CG-TYT)" in card and "Tram Y te" in card
        assert "mat-khau-wifi" not in made.text  # only inside the QR code
        assert f"--token {token.group(1)}" in made.text
        # Listed as outstanding, without its text.
        page = await c.get("/enrollment")
        assert outstanding_ids(page.text) != [] and token.group(1) not in page.text
        assert "Bàn 1 - cổng trường" in page.text
        # A station enrolls with it: it appears among the enrolled stations.
        enrolled = await c.post("/api/enroll", json={"token": token.group(1)})
        assert enrolled.status_code == 200
        page = await c.get("/enrollment")
        assert outstanding_ids(page.text) == []
        row = page.text.split('id="station-hn-cg-tyt-01"')[1].split("</tr>")[0]
        assert "Bàn 1 - cổng trường" in row and "đang hoạt động" in row
        english = await c.get("/enrollment", params={"lang": "en"})
        assert "Station enrollment" in english.text and "Outstanding tokens" in english.text


async def test_a_bad_card_makes_no_token_and_out_of_scope_facilities_do_not_exist(
    env: Env,
) -> None:
    async with env.client() as c:
        csrf = await logged_in(c, "tech-cg")
        base = {"csrf_token": csrf, "lifetime": "2h", "server_url": "https://s.example.vn"}
        bad = await c.post(
            "/enrollment/tokens",
            data={**base, "facility_id": str(env.org["HN-CG-TYT"]), "server_url": "s.example"},
        )
        assert bad.status_code == 400 and 'id="form-error"' in bad.text
        assert "not an http(s) URL" in bad.text
        psk_only = await c.post(
            "/enrollment/tokens",
            data={**base, "facility_id": str(env.org["HN-CG-TYT"]), "wifi_password": "x"},
        )
        assert psk_only.status_code == 400 and "without a Wi-Fi name" in psk_only.text
        other = await c.post(
            "/enrollment/tokens", data={**base, "facility_id": str(env.org["HN-BD-TYT"])}
        )
        assert other.status_code == 404 and "Lỗi 404" in other.text
        too_long = await c.post(
            "/enrollment/tokens",
            data={**base, "facility_id": str(env.org["HN-CG-TYT"]), "lifetime": "30d"},
        )
        assert too_long.status_code == 400
        assert tokens_in_db(env) == 0
    async with env.client() as c:  # a role without station.write: no link, no page
        await c.post("/login", data={"username": "staff-cg", "password": PASSWORD})
        assert "/enrollment" not in (await c.get("/")).text
        refused = await c.get("/enrollment")
        assert refused.status_code == 403 and "station.write" in refused.text


async def test_cancel_reprovision_and_decommission_with_confirmation(
    env: Env, broker: Broker
) -> None:
    async with env.client() as c:
        csrf = await logged_in(c, "tech-cg")
        base = {
            "csrf_token": csrf,
            "lifetime": "2h",
            "server_url": "https://s.example.vn",
            "facility_id": str(env.org["HN-CG-TYT"]),
        }
        lost = await c.post("/enrollment/tokens", data=base)
        used = await c.post("/enrollment/tokens", data=base)
        (lost_id, _used_id) = outstanding_ids((await c.get("/enrollment")).text)[::-1]
        r = await c.post(f"/enrollment/tokens/{lost_id}/cancel", data={"csrf_token": "forged"})
        assert r.status_code == 403
        r = await c.post(f"/enrollment/tokens/{lost_id}/cancel", data={"csrf_token": csrf})
        assert r.status_code == 303
        page = await c.get(r.headers["location"])
        assert "Đã hủy mã đăng ký." in page.text and lost_id not in outstanding_ids(page.text)
        lost_token = re.search(r'<code id="token">([^<]+)</code>', lost.text)
        used_token = re.search(r'<code id="token">([^<]+)</code>', used.text)
        assert lost_token is not None and used_token is not None
        assert (await c.post("/api/enroll", json={"token": lost_token.group(1)})).status_code == 410
        first = (await c.post("/api/enroll", json={"token": used_token.group(1)})).json()
        station = first["station_id"]

        # Re-provision: the form is for that station; the card says so.
        page = await c.get("/enrollment", params={"station": station})
        assert f'name="station_id" value="{station}"' in page.text
        assert 'name="facility_id"' not in page.text
        again = await c.post(
            "/enrollment/tokens",
            data={k: v for k, v in base.items() if k != "facility_id"} | {"station_id": station},
        )
        assert (
            again.status_code == 201
            and f"Cấp lại cho trạm / Re-provisions</dt><dd>{station}" in again.text
        )
        assert (await c.get("/enrollment", params={"station": "hn-bd-tyt-01"})).status_code == 404

        # Decommission: a confirmation page first, then a CSRF-checked form.
        confirm = await c.get(f"/enrollment/stations/{station}/decommission")
        assert confirm.status_code == 200 and 'id="confirm-decommission"' in confirm.text
        assert "Máy chủ MQTT sẽ từ chối" in confirm.text
        path = f"/enrollment/stations/{station}/decommission"
        assert (await c.post(path, data={"csrf_token": "forged"})).status_code == 403
        assert mqtt_connack("127.0.0.1", broker.port, station, first["mqtt"]["password"]) == (
            "Success"
        )
        done = await c.post(path, data={"csrf_token": csrf})
        assert done.status_code == 303
        page = await c.get(done.headers["location"])
        assert f"Đã thu hồi trạm {station}." in page.text
        row = page.text.split(f'id="station-{station}"')[1].split("</tr>")[0]
        assert "đã thu hồi" in row and "decommission" not in row
        assert outstanding_ids(page.text) == []  # the re-provisioning token was cancelled
        assert mqtt_connack("127.0.0.1", broker.port, station, first["mqtt"]["password"]) == (
            "Not authorized"
        )
        already = await c.get(path)
        assert 'id="already"' in already.text and "confirm-decommission" not in already.text
    async with env.client() as c:  # a manager of Ba Đình cannot see or touch it
        await logged_in(c, "mgr-bd")
        assert (await c.get(f"/enrollment/stations/{station}/decommission")).status_code == 404


async def test_without_enrollment_there_is_no_page_and_no_link(sqlite_url: str) -> None:
    env = build_env(sqlite_url)
    try:
        async with env.client() as c:
            await c.post("/login", data={"username": "admin", "password": PASSWORD})
            assert "/enrollment" not in (await c.get("/")).text
            assert (await c.get("/enrollment")).status_code == 404
    finally:
        env.engine.dispose()


def test_every_offered_lifetime_has_both_languages() -> None:
    assert all(f"enroll.lifetime.{key}" in TEXTS for key in LIFETIMES)
