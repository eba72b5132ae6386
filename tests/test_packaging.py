"""What a normal (non-editable) install gets: the wheel holds every file the code reads at run
time, and `swabline admin broker-setup` works from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from swabline.tls import issue_server_cert, make_ca

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_data_pattern_names_files_that_exist() -> None:
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((REPO / package).glob(pattern)), f"{package}: {pattern} matches nothing"


def test_no_dependency_is_listed_twice_in_an_extra() -> None:
    for extra, deps in PYPROJECT["project"]["optional-dependencies"].items():
        names = [d.split("[")[0].split(">")[0].split("=")[0].split("<")[0] for d in deps]
        assert len(names) == len(set(names)), extra


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of the working tree, built from a copy (the build writes next to its sources),
    as `pip install /opt/swabline/src` builds it on a station (isolated build environment)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("protocol", "agent", "server", "swabline"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("swabline-*.whl")
    return wheel


def test_a_wheel_install_has_its_data_files_and_sets_up_a_broker(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {"swabline/data/mosquitto.conf", "server/migrations/script.py.mako"}
    for folder, pattern in (
        ("server/web/templates", "*.html"),
        ("server/migrations/versions", "*.py"),
    ):
        wanted |= {str(p.relative_to(REPO)) for p in (REPO / folder).glob(pattern)}
    assert wanted - names == set()

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = tmp_path / "elsewhere"  # not the source tree
    run.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import swabline; print(swabline.__file__)"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the editable one
    ca = make_ca(tmp_path / "ca")
    cert = issue_server_cert(ca, tmp_path / "tls", names=["localhost"])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "swabline",
            "admin",
            "broker-setup",
            "--conf-dir",
            str(tmp_path / "etc"),
            "--state-dir",
            str(tmp_path / "state"),
            "--secrets-dir",
            str(tmp_path / "secrets"),
            "--cert",
            str(cert.cert),
            "--key",
            str(cert.key),
        ],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    conf = (tmp_path / "etc" / "mosquitto.conf").read_text()
    assert "max_queued_messages 100000" in conf and "allow_anonymous false" in conf
