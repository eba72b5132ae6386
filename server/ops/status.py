"""A station's status, derived from its births, deaths and heartbeats.

- ``offline``: its death arrived (with the ``bd_seq`` of its current connection: a late will
  from an older connection is ignored by ingest), or nothing heard for
  ``offline_after_intervals`` heartbeat intervals;
- ``stale``: connected as far as the broker knows, but nothing heard (no heartbeat, no record,
  no birth) for ``stale_after_intervals`` intervals (a hung agent, a half-open connection). A
  station still delivering records is alive even if its heartbeats are lost (QoS 0);
- ``online``: heard from within ``stale_after_intervals`` intervals;
- ``unknown``: registered but never heard from.

The interval is the one the station states in its heartbeats (``heartbeat_s``), else the
configured default.

How fast a change reaches an open fleet page: a station that stops (hangs just after a
heartbeat) turns stale ``stale_after_intervals`` intervals later; the page then sees it in the
next fleet snapshot (``FLEET_SNAPSHOT_S``) at its next poll. ``fleet_refresh_s`` sizes the poll
so that the three together stay within two heartbeat intervals (``PAGE_INTERVALS``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Status(enum.StrEnum):
    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


FLEET_SNAPSHOT_S = 1.0
"""The fleet is derived at most once per this many seconds and shared by every page."""
PAGE_INTERVALS = 2.0
"""A status change shows on an open fleet page within this many heartbeat intervals."""
MIN_REFRESH_S = 1.0


@dataclass(frozen=True, slots=True)
class StatusRules:
    heartbeat_s: float = 10.0
    stale_after_intervals: float = 1.5
    offline_after_intervals: float = 6.0


def fleet_refresh_s(rules: StatusRules, snapshot_s: float = FLEET_SNAPSHOT_S) -> float:
    """How often the fleet page polls: half of what the stale threshold and the snapshot age
    leave of ``PAGE_INTERVALS`` intervals (the other half absorbs response times and heartbeats
    arriving late), at least ``MIN_REFRESH_S``. With 10 s heartbeats and stale after 1.5
    intervals: (20 - 15 - 1) / 2 = 2 s, so a hung station shows as stale 18 s after its last
    heartbeat at the latest. Past 2 intervals (a stale threshold near 2) the promise cannot
    hold and the page polls every ``MIN_REFRESH_S``."""
    spare = (PAGE_INTERVALS - rules.stale_after_intervals) * rules.heartbeat_s - snapshot_s
    return max(MIN_REFRESH_S, spare / 2)


def shown_within_s(
    rules: StatusRules, refresh_s: float, snapshot_s: float = FLEET_SNAPSHOT_S
) -> float:
    """The longest time from a station's last heartbeat to "stale" on an open fleet page."""
    return rules.stale_after_intervals * rules.heartbeat_s + snapshot_s + refresh_s


def derive_status(
    *,
    state: str,
    last_heartbeat_at: datetime | None,
    last_seen_at: datetime | None,
    heartbeat_s: float | None,
    now: datetime,
    rules: StatusRules,
) -> Status:
    """The status of one station at ``now`` (see the module docstring)."""
    if state == "offline":
        return Status.OFFLINE
    seen = [t for t in (last_heartbeat_at, last_seen_at) if t is not None]
    if not seen:
        return Status.UNKNOWN
    heard = max(seen)
    interval = heartbeat_s if heartbeat_s and heartbeat_s > 0 else rules.heartbeat_s
    silent_s = (now - heard).total_seconds()
    if silent_s > rules.offline_after_intervals * interval:
        return Status.OFFLINE
    if silent_s > rules.stale_after_intervals * interval:
        return Status.STALE
    return Status.ONLINE
