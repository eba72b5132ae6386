"""Memory and CPU of processes, read from ``/proc`` (Linux), sampled while a simulation runs."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time one process has used so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Watched:
    """One named group of processes: a broker, a server with its workers."""

    name: str
    pids: list[int]
    rss_max: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    def tree(self) -> list[int]:
        return [p for pid in self.pids for p in process_tree(pid)]


class ResourceSampler:
    """Samples the summed RSS and CPU time of process groups once a second."""

    def __init__(self, groups: dict[str, list[int]], interval_s: float = 1.0) -> None:
        self.groups = [Watched(name, pids) for name, pids in groups.items()]
        self._interval = interval_s
        self._t0 = time.monotonic()

    def sample(self) -> None:
        t = time.monotonic() - self._t0
        for g in self.groups:
            tree = g.tree()
            rss = sum(rss_bytes(p) for p in tree)
            g.rss_max = max(g.rss_max, rss)
            g.samples.append((round(t, 2), rss))
            g.cpu_end = sum(cpu_seconds(p) for p in tree)

    async def run(self) -> None:
        for g in self.groups:
            g.cpu_start = sum(cpu_seconds(p) for p in g.tree())
        while True:
            self.sample()
            await asyncio.sleep(self._interval)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for g in self.groups:
            step = max(1, len(g.samples) // 200)  # keep the JSON small
            out[g.name] = {
                "rss_max_mb": round(g.rss_max / 2**20, 1),
                "rss_last_mb": round(g.samples[-1][1] / 2**20, 1) if g.samples else None,
                "cpu_s": round(g.cpu_end - g.cpu_start, 2),
                "rss_mb_series": [(t, round(r / 2**20, 1)) for t, r in g.samples[::step]],
            }
        return out
