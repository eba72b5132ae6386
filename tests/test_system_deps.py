"""scripts/system-deps.sh's browser step on Debian and on Ubuntu (faked: /etc/os-release, the
Debian Chromium and the venv's python are given to the script), without installing anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "system-deps.sh"

UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n'
MINT = 'NAME="Linux Mint"\nID=linuxmint\nID_LIKE="ubuntu debian"\n'
DEBIAN = 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n'


def browser_step(tmp_path: Path, os_release: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "os-release").write_text(os_release)
    calls = tmp_path / "python-calls"
    python = tmp_path / "python"  # stands for .venv/bin/python: records what it was asked
    python.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    python.chmod(0o755)
    env = {
        **os.environ,
        "OS_RELEASE": str(tmp_path / "os-release"),
        "DEBIAN_CHROMIUM": str(tmp_path / "no-chromium"),
        "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "ms-playwright"),
        "VENV_PY": str(python),
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), "browser"], env=env, capture_output=True, text=True, check=False
    )
    return done, calls


def test_ubuntu_gets_playwrights_chromium_with_its_libraries(tmp_path: Path) -> None:
    for os_release in (UBUNTU, MINT):
        done, calls = browser_step(tmp_path, os_release)
        assert done.returncode == 0, done.stderr
        assert "Ubuntu's chromium package is a snap wrapper" in done.stdout
        assert calls.read_text() == "-m playwright install --with-deps chromium\n"
        calls.unlink()


def test_ubuntu_with_the_browser_already_there_installs_nothing(tmp_path: Path) -> None:
    chrome = tmp_path / "ms-playwright" / "chromium-1140" / "chrome-linux" / "chrome"
    chrome.parent.mkdir(parents=True)
    chrome.write_text("")
    done, calls = browser_step(tmp_path, UBUNTU)
    assert done.returncode == 0 and not calls.exists()


def test_debian_without_its_chromium_says_what_to_install(tmp_path: Path) -> None:
    done, calls = browser_step(tmp_path, DEBIAN)
    assert done.returncode == 1 and not calls.exists()
    assert "apt-get install chromium" in done.stderr
