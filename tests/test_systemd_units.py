"""Every unit in systemd/ passes `systemd-analyze verify` with nothing on stderr.

`systemd-analyze verify` exits 0 on many mistakes (unknown keys, bad values are only warned
about), so any output is a failure. It runs with --root on a throwaway tree laid out as
`systemd/install.sh --root` lays out an image: the units in /etc/systemd/system, systemd's own
units (sysinit.target, ...) copied from this machine, and the programs that the units start,
as placeholders at the paths the installation uses (/opt/swabline/venv/bin/swabline,
/usr/sbin/mosquitto, /bin/kill): verify refuses a unit whose ExecStart= does not exist.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted(p.name for p in (REPO / "systemd").glob("*.service"))
SYSTEM_UNITS = next(
    p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()
)


def read_unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(REPO / "systemd" / name)
    return parser


def instance(name: str) -> str:
    return name.replace("@.service", "@1.service")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root tree with every role installed by install.sh --root."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for role in ("station", "server", "broker"):
        out = subprocess.run(
            ["bash", str(REPO / "systemd/install.sh"), "--root", str(root), role],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
    programs = set()
    for name in UNITS:
        for key in ("ExecStart", "ExecReload"):
            value = read_unit(name)["Service"].get(key)
            if value:
                programs.add(value.split()[0])
    for program in programs:
        path = root / program.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            "--generators=no",
            f"--root={root}",
            unit,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_there_are_units_for_station_server_ingest_and_broker() -> None:
    assert UNITS == [
        "swabline-agent.service",
        "swabline-ingest@.service",
        "swabline-mosquitto.service",
        "swabline-provision.service",
        "swabline-server.service",
    ]


@pytest.mark.parametrize("name", UNITS)
def test_unit_passes_systemd_analyze_verify_silently(image: Path, name: str) -> None:
    result = verify(image, instance(name))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


def test_verify_catches_a_mistake_that_exits_zero(image: Path) -> None:
    """Proof that the check above can fail: a typo in a key only gets a warning and exit 0."""
    unit_dir = image / "etc/systemd/system"
    text = (unit_dir / "swabline-agent.service").read_text()
    (unit_dir / "swabline-typo.service").write_text(text.replace("WatchdogSec=", "WatchdogSecs="))
    try:
        result = verify(image, "swabline-typo.service")
    finally:
        (unit_dir / "swabline-typo.service").unlink()
    assert "Unknown key 'WatchdogSecs'" in result.stderr


def test_the_agent_unit_is_a_watched_hardened_notify_service() -> None:
    svc = read_unit("swabline-agent.service")["Service"]
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert int(svc["WatchdogSec"]) >= 5
    assert svc["Restart"] == "always"
    assert set(svc["SupplementaryGroups"].split()) == {"input", "gpio", "dialout", "video"}
    assert svc["User"] == "swabline"
    assert svc["ProtectSystem"] == "strict"
    assert svc["ReadWritePaths"] == "/var/lib/swabline"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelModules"):
        assert svc[key] == "yes", key
    assert "ProtectClock" not in svc  # would hide NTP sync state (adjtimex)
    assert "PrivateDevices" not in svc  # would hide the scanners


def test_every_long_running_service_restarts_and_is_hardened() -> None:
    for name in UNITS:
        svc = read_unit(name)["Service"]
        assert svc["ProtectSystem"] == "strict", name
        assert svc["NoNewPrivileges"] == "yes", name
        if name != "swabline-provision.service":  # one-shot job: retries only on failure
            assert svc["Restart"] == "always", name


def test_provisioning_hands_over_to_the_agent() -> None:
    prov = read_unit("swabline-provision.service")
    agent = read_unit("swabline-agent.service")
    assert prov["Unit"]["ConditionPathExists"] == "!/etc/swabline/station.toml"
    assert agent["Unit"]["ConditionPathExists"] == "/etc/swabline/station.toml"
    assert prov["Unit"]["OnSuccess"] == "swabline-agent.service"
    assert "--wait-for-card" in prov["Service"]["ExecStart"]


def test_install_script_lays_out_units_udev_rules_and_enables_services(image: Path) -> None:
    system = image / "etc/systemd/system"
    for name in UNITS:
        assert (system / name).read_text() == (REPO / "systemd" / name).read_text()
    wants = {p.name for p in (system / "multi-user.target.wants").iterdir()}
    assert wants == {n for n in UNITS if "@" not in n}
    assert (image / "etc/udev/rules.d/99-swabline-scanners.rules").exists()
    assert (image / "etc/swabline/station.template.toml").exists()
    # 'sudo swabline provision ...' finds the command: sudo's PATH has /usr/local/bin.
    link = image / "usr/local/bin/swabline"
    assert link.is_symlink() and str(link.readlink()) == "/opt/swabline/venv/bin/swabline"
    assert (image / "opt/swabline/venv/bin/swabline").is_file()  # where the link points


def test_install_script_refuses_unknown_roles() -> None:
    out = subprocess.run(
        ["bash", str(REPO / "systemd/install.sh"), "--root", "/tmp", "toaster"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert re.search(r"unknown argument 'toaster'", out.stderr)
