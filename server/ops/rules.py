"""Alert rules: which conditions hold for a station now. Pure: facts in, conditions out.

``evaluate`` returns the conditions that hold and the kinds it could judge. A kind it could not
judge (the station is offline, so its last heartbeat is old news) is left as it is: an open
alert stays open rather than being resolved on stale data. The alert state machine in
``server/ops/alerts.py`` opens, keeps and resolves alerts from this.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from server.config import AlertThresholds
from server.ops.status import Status


class AlertKind(enum.StrEnum):
    OFFLINE = "offline"
    BACKLOG_OLD = "backlog_old"
    BACKLOG_GROWING = "backlog_growing"
    DISK_LOW = "disk_low"
    OVERHEATING = "overheating"
    UNDER_VOLTAGE = "under_voltage"
    SCANNER_MISSING = "scanner_missing"
    CLOCK_UNSYNCED = "clock_unsynced"
    SEQUENCE_GAP = "sequence_gap"


SEVERITY: dict[AlertKind, str] = {
    AlertKind.OFFLINE: "critical",
    AlertKind.BACKLOG_OLD: "warning",
    AlertKind.BACKLOG_GROWING: "warning",
    AlertKind.DISK_LOW: "critical",
    AlertKind.OVERHEATING: "warning",
    AlertKind.UNDER_VOLTAGE: "critical",
    AlertKind.SCANNER_MISSING: "critical",
    AlertKind.CLOCK_UNSYNCED: "warning",
    AlertKind.SEQUENCE_GAP: "warning",
}

HEALTH_KINDS = frozenset(
    {
        AlertKind.BACKLOG_OLD,
        AlertKind.BACKLOG_GROWING,
        AlertKind.DISK_LOW,
        AlertKind.OVERHEATING,
        AlertKind.UNDER_VOLTAGE,
        AlertKind.SCANNER_MISSING,
        AlertKind.CLOCK_UNSYNCED,
    }
)
"""Judged from the last heartbeat: only while the station is online."""


@dataclass(frozen=True, slots=True)
class StationFacts:
    """What the monitor knows about one station at ``now``."""

    station_id: str
    status: Status
    status_since: datetime
    in_hours: bool
    heartbeat: dict[str, Any] = field(default_factory=dict)
    server_offset_s: float | None = None
    backlog_before: int | None = None
    """Outbox depth ``backlog_growth_window_s`` ago (from the history), if known."""
    gap_missing: int = 0
    gap_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    kind: AlertKind
    detail: dict[str, Any]

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]


@dataclass(frozen=True, slots=True)
class Evaluation:
    findings: dict[AlertKind, Finding]
    judged: frozenset[AlertKind]


def _num(hb: dict[str, Any], key: str) -> float | None:
    value = hb.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def evaluate(facts: StationFacts, t: AlertThresholds, now: datetime) -> Evaluation:
    """The conditions that hold for ``facts`` under thresholds ``t``."""
    found: dict[AlertKind, Finding] = {}
    judged: set[AlertKind] = {AlertKind.OFFLINE, AlertKind.SEQUENCE_GAP}

    def add(kind: AlertKind, **detail: Any) -> None:
        found[kind] = Finding(kind, detail)

    if facts.status in (Status.STALE, Status.OFFLINE):
        down_s = (now - facts.status_since).total_seconds()
        if not facts.in_hours:
            # Closed: a station switched off is expected; an alert from opening hours stays
            # until the station is back (it has not come back just because the site closed).
            judged.discard(AlertKind.OFFLINE)
        elif down_s >= t.offline_after_s:
            add(AlertKind.OFFLINE, status=facts.status.value, down_s=round(down_s))
    elif facts.status is Status.UNKNOWN:
        judged.discard(AlertKind.OFFLINE)  # never heard from: nothing to compare with

    if facts.gap_missing > 0 and facts.gap_since is not None:
        gap_s = (now - facts.gap_since).total_seconds()
        if gap_s >= t.gap_grace_s:
            add(AlertKind.SEQUENCE_GAP, missing=facts.gap_missing, since_s=round(gap_s))
    elif facts.gap_missing > 0:
        judged.discard(AlertKind.SEQUENCE_GAP)

    if facts.status is not Status.ONLINE:
        return Evaluation(found, frozenset(judged))
    judged |= HEALTH_KINDS
    hb = facts.heartbeat

    age = _num(hb, "oldest_pending_age_s")
    if age is not None and age >= t.backlog_max_age_s:
        add(AlertKind.BACKLOG_OLD, oldest_age_s=round(age), depth=hb.get("outbox_depth"))

    depth = _num(hb, "outbox_depth")
    if depth is not None and facts.backlog_before is not None:
        grew = depth - facts.backlog_before
        if grew >= t.backlog_growth_min:
            add(
                AlertKind.BACKLOG_GROWING,
                depth=int(depth),
                grew=int(grew),
                window_s=round(t.backlog_growth_window_s),
            )

    free = _num(hb, "disk_free_mb")
    if free is not None and free < t.disk_free_min_mb:
        add(AlertKind.DISK_LOW, disk_free_mb=round(free))

    temp = _num(hb, "cpu_temp_c")
    throttled = hb.get("throttled") is True
    if (temp is not None and temp >= t.cpu_temp_max_c) or throttled:
        add(AlertKind.OVERHEATING, cpu_temp_c=temp, throttled=throttled)

    if hb.get("under_voltage") is True:
        add(AlertKind.UNDER_VOLTAGE, throttled_flags=hb.get("throttled_flags"))

    connected, expected = _num(hb, "scanners_connected"), _num(hb, "scanners_expected")
    if connected is not None and expected is not None and connected < expected:
        add(AlertKind.SCANNER_MISSING, connected=int(connected), expected=int(expected))

    offsets = [o for o in (_num(hb, "clock_offset_s"), facts.server_offset_s) if o is not None]
    worst = max(offsets, key=abs) if offsets else None
    if hb.get("clock_synced") is False or (worst is not None and abs(worst) > t.clock_offset_max_s):
        add(
            AlertKind.CLOCK_UNSYNCED,
            clock_synced=hb.get("clock_synced"),
            offset_s=None if worst is None else round(worst, 1),
        )
    return Evaluation(found, frozenset(judged))
