"""Identity of records made on a station."""

from __future__ import annotations

import os
import secrets
import time
import uuid
from pathlib import Path


def uuid7(unix_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit milliseconds, then random bits. Sorts by creation time.

    Uniqueness comes from the 74 random bits, not from the clock, so a wrong Pi clock cannot make
    two records share an id.
    """
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    rand = secrets.randbits(74)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 62) << 64  # 12 bits rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # 62 bits rand_b
    return str(uuid.UUID(int=value))


def boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    """The kernel's id of this boot; a fresh random id where the kernel has none."""
    try:
        return path.read_text().strip()
    except OSError:
        return os.urandom(16).hex()
