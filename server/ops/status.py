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


@dataclass(frozen=True, slots=True)
class StatusRules:
    heartbeat_s: float = 10.0
    stale_after_intervals: float = 2.0
    offline_after_intervals: float = 6.0


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
