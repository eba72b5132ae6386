"""Machine readings from the kernel's files, laid out in a temporary root as on a Raspberry Pi."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.health import (
    VCGENCMD_SYSFS,
    LinuxHealthProbe,
    PiHealthProbe,
    is_raspberry_pi,
    run_vcgencmd,
)

MEMINFO = """MemTotal:        3884376 kB
MemFree:          912340 kB
MemAvailable:    2854912 kB
Buffers:          102400 kB
"""
WIRELESS = """Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   48.  -62.  -256        0      0      0      0     17        0
"""


def pi_root(tmp_path: Path, *, throttled: str | None = "50005\n") -> Path:
    root = tmp_path / "root"
    for i, (kind, milli) in enumerate([("acpitz", "27800"), ("cpu-thermal", "71594")]):
        zone = root / f"sys/class/thermal/thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    (root / "proc/net").mkdir(parents=True)
    (root / "proc/loadavg").write_text("0.52 0.41 0.30 2/211 4242\n")
    (root / "proc/meminfo").write_text(MEMINFO)
    (root / "proc/net/wireless").write_text(WIRELESS)
    (root / "proc/device-tree").mkdir()
    (root / "proc/device-tree/model").write_text("Raspberry Pi 4 Model B Rev 1.4\x00")
    if throttled is not None:
        path = root / VCGENCMD_SYSFS
        path.parent.mkdir(parents=True)
        path.write_text(throttled)
    return root


def test_linux_probe_reads_temperature_load_memory_disk_and_wifi(tmp_path: Path) -> None:
    root = pi_root(tmp_path)
    reading = LinuxHealthProbe(disk_path=tmp_path, root=root).read()
    assert reading.cpu_temp_c == pytest.approx(71.594)  # the CPU zone, not the first one
    assert reading.load_avg == pytest.approx(0.52)
    assert reading.mem_total_mb == pytest.approx(3884376 / 1024)
    assert reading.mem_available_mb == pytest.approx(2854912 / 1024)
    assert reading.wifi_signal_dbm == -62.0
    st = os.statvfs(tmp_path)
    assert reading.disk_free_mb == pytest.approx(st.f_bavail * st.f_frsize / 2**20, rel=0.05)
    assert reading.disk_total_mb == pytest.approx(st.f_blocks * st.f_frsize / 2**20)
    assert reading.throttling is None  # a plain Linux probe never reports Pi flags


def test_pi_probe_decodes_under_voltage_and_throttling_from_sysfs(tmp_path: Path) -> None:
    root = pi_root(tmp_path, throttled="50005\n")
    reading = PiHealthProbe(disk_path=tmp_path, root=root, vcgencmd=lambda: None).read()
    assert reading.throttling is not None
    assert reading.throttling.flags == 0x50005
    fields = reading.heartbeat_fields()
    assert fields["under_voltage"] is True
    assert fields["throttled"] is True
    assert fields["throttled_flags"] == 0x50005


def test_pi_probe_falls_back_to_vcgencmd_and_a_healthy_pi_reports_no_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pi_root(tmp_path, throttled=None)
    fake = tmp_path / "bin" / "vcgencmd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho throttled=0x0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert run_vcgencmd() == "throttled=0x0\n"
    reading = PiHealthProbe(disk_path=tmp_path, root=root).read()
    assert reading.heartbeat_fields()["under_voltage"] is False
    assert reading.heartbeat_fields()["throttled"] is False


def test_past_under_voltage_alone_is_not_reported_as_now(tmp_path: Path) -> None:
    root = pi_root(tmp_path, throttled="0x10000")
    reading = PiHealthProbe(disk_path=tmp_path, root=root).read()
    assert reading.heartbeat_fields()["under_voltage"] is False
    assert reading.heartbeat_fields()["throttled_flags"] == 0x10000


def test_missing_files_give_no_reading_rather_than_a_made_up_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    probe = PiHealthProbe(disk_path=tmp_path / "nope" / "deeper", root=empty, vcgencmd=lambda: None)
    fields = probe.read().heartbeat_fields()
    assert not {"cpu_temp_c", "load_avg", "mem_total_mb", "wifi_signal_dbm"} & set(fields)
    assert "under_voltage" not in fields
    assert fields["disk_free_mb"] > 0  # the nearest existing folder's file system


def test_raspberry_pi_detection_uses_the_device_tree_model(tmp_path: Path) -> None:
    assert is_raspberry_pi(pi_root(tmp_path))
    assert not is_raspberry_pi(tmp_path)
