"""The browser tests find Chromium where Debian and Ubuntu machines have it (tests/browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import browser


@pytest.fixture
def no_debian_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A machine without /usr/bin/chromium (Ubuntu) and an empty PATH."""
    monkeypatch.setattr(browser, "DEBIAN", tmp_path / "no-chromium")
    monkeypatch.delenv("SWABLINE_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "ms-playwright"))
    browser._find.cache_clear()
    yield tmp_path / "ms-playwright"
    browser._find.cache_clear()


def download(base: Path, revision: int) -> Path:
    exe = base / f"chromium-{revision}" / "chrome-linux" / "chrome"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    return exe


def test_without_debian_chromium_the_newest_playwright_download_is_used(
    no_debian_chromium: Path,
) -> None:
    download(no_debian_chromium, 999)
    newest = download(no_debian_chromium, 1140)
    assert browser.chromium() == str(newest)


def test_no_chromium_at_all_fails_naming_the_fix(no_debian_chromium: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="playwright install --with-deps chromium"):
        browser.chromium()


def test_an_explicit_chromium_wins_and_must_exist(
    no_debian_chromium: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    download(no_debian_chromium, 1140)
    mine = tmp_path / "my-chromium"
    monkeypatch.setenv("SWABLINE_CHROMIUM", str(mine))
    with pytest.raises(pytest.fail.Exception, match="SWABLINE_CHROMIUM"):
        browser.chromium()
    mine.write_text("")
    browser._find.cache_clear()
    assert browser.chromium() == str(mine)
