"""The station's OS assets: udev rules, Raspberry Pi OS settings, the first-boot template."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FW = REPO / "firmware_config"
RULES = FW / "udev" / "99-swabline-scanners.rules"


def udevadm_test(rules_dir: Path) -> str:
    """Run `udevadm test` with ``rules_dir`` as /etc/udev/rules.d, in a private mount namespace
    (nothing changes for the rest of the machine); return what it says about rule files."""
    # As root (CI) a mount namespace is enough; elsewhere a user namespace grants the mount.
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    out = subprocess.run(
        [
            "unshare",
            "--mount",
            *userns,
            "sh",
            "-c",
            f"mount --bind {rules_dir} /etc/udev/rules.d && "
            "udevadm test --action=add /sys/class/tty/tty0",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Reading rules file: /etc/udev/rules.d/" in out.stdout + out.stderr, out.stderr
    return out.stdout + out.stderr


def test_udev_rules_are_accepted_by_udevadm(tmp_path: Path) -> None:
    (tmp_path / RULES.name).write_text(RULES.read_text())
    (tmp_path / "98-broken.rules").write_text('SUBSYSTEM=="tty", GRUOP="dialout"\n')
    said = udevadm_test(tmp_path)
    assert f"Reading rules file: /etc/udev/rules.d/{RULES.name}" in said
    complaints = re.findall(r"^/etc/udev/rules\.d/\S+:\d+ .*$", said, flags=re.M)
    # The deliberately broken file is flagged, so the check can fail; ours is not.
    assert any("98-broken.rules:1" in line for line in complaints), said
    assert not [line for line in complaints if RULES.name in line], complaints


def test_udev_rules_name_scanners_stably_with_the_right_groups() -> None:
    text = RULES.read_text()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    gotos = set(re.findall(r'GOTO="([^"]+)"', text))
    labels = set(re.findall(r'LABEL="([^"]+)"', text))
    assert gotos <= labels
    kbd = next(r for r in rules if 'KERNEL=="event*"' in r)
    assert 'GROUP="input"' in kbd and 'SYMLINK+="swabline-scanner-kbd"' in kbd
    serial = next(r for r in rules if 'KERNEL=="ttyACM*"' in r)
    assert 'GROUP="dialout"' in serial and 'SYMLINK+="swabline-scanner-serial"' in serial
    for link in re.findall(r'SYMLINK\+="([^"]+)"', text):
        assert link.startswith("swabline-scanner-")
    # Honeywell, Zebra/Symbol, Datalogic, Newland
    assert {"0c2e", "05e0", "05f9", "1eab"} <= set(re.findall(r'idVendor}=="([0-9a-f]{4})"', text))


def systemd_conf(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_pi_settings_turn_on_the_watchdog_and_spare_the_sd_card() -> None:
    pi = FW / "pi"
    assert "dtparam=watchdog=on" in (pi / "config.txt.fragment").read_text().splitlines()
    manager = systemd_conf(pi / "system.conf.d/swabline-watchdog.conf")["Manager"]
    assert manager["RuntimeWatchdogSec"] == "15s"  # bcm2835-wdt's maximum
    journal = systemd_conf(pi / "journald.conf.d/swabline.conf")["Journal"]
    assert journal["Storage"] == "volatile"
    assert systemd_conf(pi / "timesyncd.conf.d/swabline.conf")["Time"]["NTP"]
    nm = systemd_conf(pi / "NetworkManager/conf.d/swabline-wifi-powersave.conf")
    assert nm["connection"]["wifi.powersave"] == "2"
    sysctl = dict(
        line.replace(" ", "").split("=", 1)
        for line in (pi / "sysctl.d/90-swabline.conf").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert sysctl["kernel.panic"] == "10"


def test_first_boot_script_is_valid_bash_and_installs_what_exists() -> None:
    script = FW / "firstboot" / "swabline-firstboot.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for rel in re.findall(r'"\$pi/([^"]+)"', text):
        assert (FW / "pi" / rel).is_file(), rel
    assert "--system-site-packages" in text  # picamera2 comes from apt
    assert 'systemd/install.sh" station' in text
    assert (REPO / "systemd" / "install.sh").is_file()
    # The province's template goes into the image, and the placeholder server never does.
    assert 'template="$here/station.template.toml"' in text
    assert "swabline\\.example\\.org" in text
    assert "swabline.example.org" in (FW / "station.template.toml").read_text()


def test_first_boot_refuses_a_template_still_naming_the_placeholder_server(
    tmp_path: Path,
) -> None:
    """The script's template check, run on its own (the rest needs root and apt)."""
    text = (FW / "firstboot" / "swabline-firstboot.sh").read_text()
    check = text[text.index("fail() {") : text.index("# 1. System packages")]
    check = check.replace('[ "$(id -u)" -eq 0 ] || fail "run as root"\n', "")
    (tmp_path / "swabline-src.tar.gz").write_text("")
    script = tmp_path / "check.sh"
    script.write_text(f'set -euo pipefail\nhere="{tmp_path}"\n{check}\necho template OK\n')

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)

    shipped = (FW / "station.template.toml").read_text()
    if not Path("/etc/swabline/station.template.toml").exists():
        assert "station.template.toml is missing" in run().stderr
    (tmp_path / "station.template.toml").write_text(shipped)
    refused = run()
    assert refused.returncode == 1 and "placeholder server swabline.example.org" in refused.stderr
    (tmp_path / "station.template.toml").write_text(
        shipped.replace("https://swabline.example.org", "https://swabline.soyte.example.vn")
    )
    assert run().stdout == "template OK\n"


def test_cloud_init_user_data_runs_the_first_boot_script() -> None:
    raw = (FW / "firstboot" / "user-data").read_text()
    assert raw.startswith("#cloud-config\n")
    data = yaml.safe_load(raw)
    assert ["bash", "/boot/firmware/swabline/swabline-firstboot.sh"] in data["runcmd"]
    assert data["keyboard"]["layout"] == "us"  # keyboard-mode scanners type with this layout
