"""The server-rendered pages: log in with the form, Vietnamese first, English on request."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from server.web.i18n import TEXTS
from tests.server.conftest import PASSWORD, Env, build_env

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(sqlite_url: str) -> Iterator[Env]:
    """Pages show what the API returns (tested on both databases): SQLite is enough here."""
    e = build_env(sqlite_url)
    yield e
    e.engine.dispose()


async def form_login(c: httpx.AsyncClient, username: str, next: str = "/") -> httpx.Response:
    return await c.post("/login", data={"username": username, "password": PASSWORD, "next": next})


async def test_log_in_with_the_form_see_the_dashboard_and_log_out(env: Env) -> None:
    async with env.client() as c:
        r = await c.get("/users")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/users"
        page = await c.get("/login")
        assert "Đăng nhập" in page.text and 'lang="vi"' in page.text
        bad = await c.post("/login", data={"username": "admin", "password": "nope"})
        assert bad.status_code == 401 and "Sai tên đăng nhập hoặc mật khẩu." in bad.text
        r = await form_login(c, "admin", next="/users")
        assert r.status_code == 303 and r.headers["location"] == "/users"
        users = await c.get("/users")
        assert users.status_code == 200 and "Quản trị tỉnh @ HN" in users.text
        home = await c.get("/")
        assert "Trạm lấy mẫu" in home.text and "st-1" in home.text and "st-2" in home.text
        english = await c.get("/", params={"lang": "en"})
        assert "Stations" in english.text and 'lang="en"' in english.text
        assert "Stations" in (await c.get("/")).text  # remembered in a cookie
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
        assert csrf is not None
        refused = await c.post("/logout", data={"csrf_token": "forged"})
        assert refused.status_code == 403
        out = await c.post("/logout", data={"csrf_token": csrf.group(1)})
        assert out.status_code == 303
        assert (await c.get("/")).status_code == 303


async def test_pages_show_only_what_the_role_and_scope_allow(env: Env) -> None:
    async with env.client() as c:
        await form_login(c, "staff-bd")
        home = await c.get("/")
        assert "st-1" in home.text and "st-2" not in home.text
        found = await c.get("/search", params={"q": "T-"})
        assert "T-BD-1" in found.text and "T-CG-1" not in found.text
        assert (await c.get("/users")).status_code == 403
    async with env.client() as c:
        await form_login(c, "ops")
        home = await c.get("/")
        assert "st-1" in home.text and 'id="records"' not in home.text  # no personal data
    async with env.client() as c:
        r = await c.post(
            "/login",
            data={"username": "admin", "password": PASSWORD, "next": "https://evil.example/"},
        )
        assert r.headers["location"] == "/"


def test_every_text_has_both_languages() -> None:
    from pathlib import Path

    import server.web

    used: set[str] = set()
    for tpl in (Path(server.web.__file__).parent / "templates").glob("*.html"):
        used |= set(re.findall(r't\("([a-z_.]+)"\)', tpl.read_text()))
    assert used - set(TEXTS) == set()
    assert all(vi and en for vi, en in TEXTS.values())
