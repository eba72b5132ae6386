"""Where the browser tests find Chromium (every test that drives a real browser asks here).

In order: ``$SWABLINE_CHROMIUM``; Debian's package, ``/usr/bin/chromium`` (what CI and
``scripts/system-deps.sh test`` give on Debian); the Chromium that Playwright downloaded
(``playwright install --with-deps chromium``: how ``scripts/system-deps.sh browser`` sets up
Ubuntu, whose ``chromium`` deb is only a wrapper around the snap, which cannot run in a container);
any other ``chromium``/``chromium-browser`` on the PATH. No browser is a failure that names the
fix, never a skip.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest

DEBIAN = Path("/usr/bin/chromium")
FIX = (
    "no Chromium for the browser tests: on Debian 'apt-get install chromium', on Ubuntu "
    "'.venv/bin/playwright install --with-deps chromium' (scripts/system-deps.sh does either), "
    "or set SWABLINE_CHROMIUM to a Chromium executable"
)


def _playwright_download() -> Path | None:
    """The newest Chromium in Playwright's browser folder, found without starting its driver
    (so this works from async tests too)."""
    base = Path(
        os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or Path.home() / ".cache" / "ms-playwright"
    )
    found = [p for p in base.glob("chromium-*/chrome-linux*/chrome") if p.is_file()]
    return max(found, key=_revision, default=None)


def _revision(executable: Path) -> int:
    """1140 for .../chromium-1140/chrome-linux/chrome."""
    tail = executable.parents[1].name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


@functools.cache
def _find() -> str | None:
    explicit = os.environ.get("SWABLINE_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    if DEBIAN.is_file():
        return str(DEBIAN)
    downloaded = _playwright_download()
    if downloaded is not None:
        return str(downloaded)
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium() -> str:
    """The Chromium executable to launch with Playwright (``executable_path=``)."""
    found = _find()
    if found is None:
        pytest.fail(FIX)
    return found
