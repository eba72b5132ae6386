"""Health readings of the machine a station runs on: temperature, load, memory, disk, Wi-Fi, power.

``HealthProbe`` is the seam. ``LinuxHealthProbe`` reads the kernel's files (any Linux);
``PiHealthProbe`` adds the Raspberry Pi firmware's under-voltage and throttling flags;
``agent.fakes.FakeHealthProbe`` returns what a test sets. A reading that cannot be taken is
``None`` (a laptop has no ``get_throttled``, a wired station no Wi-Fi): never a made-up value.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_CPU_ZONES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp")

# Bits of the firmware's get_throttled mask (Raspberry Pi documentation, "vcgencmd").
UNDER_VOLTAGE_NOW = 1 << 0
FREQ_CAPPED_NOW = 1 << 1
THROTTLED_NOW = 1 << 2
SOFT_TEMP_LIMIT_NOW = 1 << 3
UNDER_VOLTAGE_OCCURRED = 1 << 16
THROTTLED_OCCURRED = 1 << 18


@dataclass(frozen=True, slots=True)
class Throttling:
    """The Raspberry Pi firmware's ``get_throttled`` mask, decoded."""

    flags: int

    @property
    def under_voltage(self) -> bool:
        return bool(self.flags & UNDER_VOLTAGE_NOW)

    @property
    def throttled(self) -> bool:
        return bool(self.flags & (FREQ_CAPPED_NOW | THROTTLED_NOW | SOFT_TEMP_LIMIT_NOW))


@dataclass(frozen=True, slots=True)
class HealthReading:
    """One set of readings; ``None`` where the machine cannot tell."""

    cpu_temp_c: float | None = None
    load_avg: float | None = None
    mem_total_mb: float | None = None
    mem_available_mb: float | None = None
    disk_total_mb: float | None = None
    disk_free_mb: float | None = None
    wifi_signal_dbm: float | None = None
    throttling: Throttling | None = None

    def heartbeat_fields(self) -> dict[str, object]:
        """The ``Heartbeat`` fields this reading fills (``None`` left out)."""
        fields: dict[str, object | None] = {
            "cpu_temp_c": self.cpu_temp_c,
            "load_avg": self.load_avg,
            "mem_total_mb": self.mem_total_mb,
            "mem_available_mb": self.mem_available_mb,
            "disk_total_mb": self.disk_total_mb,
            "disk_free_mb": self.disk_free_mb,
            "wifi_signal_dbm": self.wifi_signal_dbm,
        }
        if self.throttling is not None:
            fields["under_voltage"] = self.throttling.under_voltage
            fields["throttled"] = self.throttling.throttled
            fields["throttled_flags"] = self.throttling.flags
        return {k: v for k, v in fields.items() if v is not None}


class HealthProbe(Protocol):
    """Takes a ``HealthReading``. Must be quick (called once per heartbeat on the station loop)."""

    def read(self) -> HealthReading: ...


class LinuxHealthProbe:
    """Readings from a Linux kernel's files.

    Reads ``/sys/class/thermal/thermal_zone*/temp`` (the ``cpu-thermal`` zone when there is
    one), ``/proc/loadavg``, ``/proc/meminfo``, ``/proc/net/wireless`` and ``statvfs`` of
    ``disk_path`` (the outbox's folder). Needs no privileges. ``root`` lets tests point it at a
    copy of those files.
    """

    def __init__(self, *, disk_path: Path, root: Path = Path("/")) -> None:
        self.disk_path = disk_path
        self.root = root

    def read(self) -> HealthReading:
        total, available = self._memory()
        disk_total, disk_free = self._disk()
        return HealthReading(
            cpu_temp_c=self._temperature(),
            load_avg=self._load(),
            mem_total_mb=total,
            mem_available_mb=available,
            disk_total_mb=disk_total,
            disk_free_mb=disk_free,
            wifi_signal_dbm=self._wifi(),
            throttling=self._throttling(),
        )

    def _throttling(self) -> Throttling | None:
        return None

    def _path(self, name: str) -> Path:
        return self.root / name.lstrip("/")

    def _text(self, name: str) -> str | None:
        try:
            return self._path(name).read_text(encoding="ascii", errors="replace")
        except OSError:
            return None

    def _temperature(self) -> float | None:
        zones: list[tuple[str, Path]] = []
        for zone in sorted(self._path("sys/class/thermal").glob("thermal_zone*")):
            try:
                zones.append(((zone / "type").read_text().strip(), zone))
            except OSError:
                continue
        preferred = [z for kind, z in zones if kind in _CPU_ZONES]
        candidates = preferred or [z for _, z in zones]
        if not candidates:
            return None
        chosen = candidates[0]
        try:
            return int((chosen / "temp").read_text().strip()) / 1000
        except (OSError, ValueError):
            return None

    def _load(self) -> float | None:
        text = self._text("proc/loadavg")
        try:
            return float(text.split()[0]) if text else None
        except (IndexError, ValueError):
            return None

    def _memory(self) -> tuple[float | None, float | None]:
        text = self._text("proc/meminfo")
        if not text:
            return None, None
        values: dict[str, float] = {}
        for line in text.splitlines():
            m = re.match(r"^(\w+):\s+(\d+) kB", line)
            if m:
                values[m.group(1)] = int(m.group(2)) / 1024
        return values.get("MemTotal"), values.get("MemAvailable")

    def _disk(self) -> tuple[float | None, float | None]:
        path = self.disk_path
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            st = os.statvfs(path)
        except OSError:
            return None, None
        return st.f_blocks * st.f_frsize / _MIB, st.f_bavail * st.f_frsize / _MIB

    def _wifi(self) -> float | None:
        # Format (wireless.h): "wlan0: 0000   54.  -56.  -256        0 ...": link, level, noise.
        text = self._text("proc/net/wireless")
        if not text:
            return None
        for line in text.splitlines()[2:]:
            parts = line.split()
            if len(parts) >= 4 and parts[0].endswith(":"):
                try:
                    return float(parts[3].rstrip("."))
                except ValueError:
                    continue
        return None


VCGENCMD_SYSFS = "sys/devices/platform/soc/soc:firmware/get_throttled"


def run_vcgencmd() -> str | None:
    """Output of ``vcgencmd get_throttled``, or ``None`` when it is not installed or fails."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "get_throttled"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("vcgencmd failed: %s", exc)
        return None
    return done.stdout if done.returncode == 0 else None


class PiHealthProbe(LinuxHealthProbe):
    """``LinuxHealthProbe`` plus the Raspberry Pi firmware's under-voltage and throttling flags.

    Reads the mask from ``/sys/devices/platform/soc/soc:firmware/get_throttled`` (the
    ``raspberrypi-hwmon``/firmware driver, readable by everyone, hexadecimal) when present, else
    runs ``vcgencmd get_throttled`` (user in group ``video``). ``vcgencmd`` is injectable for
    tests.
    """

    def __init__(
        self,
        *,
        disk_path: Path,
        root: Path = Path("/"),
        vcgencmd: Callable[[], str | None] = run_vcgencmd,
    ) -> None:
        super().__init__(disk_path=disk_path, root=root)
        self._vcgencmd = vcgencmd

    def _throttling(self) -> Throttling | None:
        text = self._text(VCGENCMD_SYSFS)
        if text is None:
            text = self._vcgencmd()
        if text is None:
            return None
        m = re.search(r"(?:throttled=)?(0x[0-9a-fA-F]+|[0-9a-fA-F]+)\s*$", text.strip())
        if not m:
            log.debug("unexpected get_throttled output %r", text[:80])
            return None
        return Throttling(int(m.group(1), 16))


def is_raspberry_pi(root: Path = Path("/")) -> bool:
    """True on a Raspberry Pi (from the device tree's model string)."""
    try:
        model = (root / "proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False
    return "Raspberry Pi" in model


def probe_for_this_machine(disk_path: Path) -> HealthProbe:
    """``PiHealthProbe`` on a Raspberry Pi, else ``LinuxHealthProbe``."""
    if is_raspberry_pi():
        return PiHealthProbe(disk_path=disk_path)
    return LinuxHealthProbe(disk_path=disk_path)
