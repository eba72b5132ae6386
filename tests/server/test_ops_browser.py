"""The fleet page in a real headless Chromium: it updates itself when a station's status changes,
without reloading, and sorts by a column when its header is clicked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn

from server.config import ServerConfig
from swabline.broker import free_port
from tests.browser import chromium
from tests.server.conftest import PASSWORD, Env, build_env
from tests.server.ops_helpers import add_station, heartbeat, ingest, status

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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Env, str]]:
    config = ServerConfig.model_validate({"ops": {"fleet_refresh_s": 1}})
    env = build_env(f"sqlite:///{tmp_path / 'b.db'}", config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield env, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    env.engine.dispose()


def test_the_fleet_page_follows_a_station_going_offline_without_reloading(
    served: tuple[Env, str],
) -> None:
    from playwright.sync_api import sync_playwright

    env, url = served
    add_station(env.engine, "st-3", env.org["HN-CG-TYT"])
    now = datetime.now(UTC)
    ingest(
        env.engine,
        *[status(s, "online", 1) for s in ("st-1", "st-2", "st-3")],
        heartbeat("st-1", now, outbox_depth=3),
        heartbeat("st-2", now, outbox_depth=40),
        heartbeat("st-3", now, outbox_depth=7),
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(f"{url}/login?next=/ops")
            page.fill("input[name=username]", "ops")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/ops")
            row = page.locator("#st-st-2")
            assert row.get_attribute("data-status") == "online"
            assert "Trực tuyến" in row.inner_text()
            page.evaluate("window.__sameDocument = true")

            ingest(env.engine, status("st-2", "offline", 1))  # st-2's death arrives

            page.wait_for_selector('#st-st-2[data-status="offline"]', timeout=15_000)
            assert page.evaluate("window.__sameDocument === true")  # updated in place
            assert "Ngoại tuyến" in page.locator("#st-st-2").inner_text()
            assert page.locator('#summary [data-status="offline"] b').inner_text() == "1"

            cau_giay = page.locator("tbody.group", has_text="Cầu Giấy")

            def order() -> list[str]:
                return cau_giay.locator("tr.st").evaluate_all("rows => rows.map(r => r.id)")

            assert order() == ["st-st-2", "st-st-3"]  # worst first: the offline one
            page.click('th[data-sort="outbox_depth"]')
            assert order() == ["st-st-3", "st-st-2"]  # backlog 7, then 40
            page.click('th[data-sort="outbox_depth"]')
            assert order() == ["st-st-2", "st-st-3"]  # descending

            page.goto(f"{url}/ops?lang=en")
            page.wait_for_selector('#st-st-2[data-status="offline"]')
            assert "Offline" in page.locator("#st-st-2").inner_text()
        finally:
            browser.close()
