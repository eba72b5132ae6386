"""Pure ops logic: a station's status, facility operating hours, and the alert rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from server.config import AlertThresholds, ServerConfig
from server.ops.rules import AlertKind, StationFacts, evaluate
from server.ops.schedule import Schedule, in_operating_hours
from server.ops.status import (
    Status,
    StatusRules,
    derive_status,
    fleet_refresh_s,
    shown_within_s,
)

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)  # Friday 10:00 in Ho Chi Minh City
RULES = StatusRules(heartbeat_s=10, stale_after_intervals=2, offline_after_intervals=6)


def status(
    state: str = "online",
    heartbeat_ago: float | None = 5,
    seen_ago: float | None = None,
    interval: float | None = None,
) -> Status:
    return derive_status(
        state=state,
        last_heartbeat_at=None if heartbeat_ago is None else NOW - timedelta(seconds=heartbeat_ago),
        last_seen_at=None if seen_ago is None else NOW - timedelta(seconds=seen_ago),
        heartbeat_s=interval,
        now=NOW,
        rules=RULES,
    )


def test_status_follows_heartbeats_births_and_deaths() -> None:
    assert status(heartbeat_ago=5) is Status.ONLINE
    assert status(heartbeat_ago=20) is Status.ONLINE  # exactly two intervals: not yet stale
    assert status(heartbeat_ago=21) is Status.STALE
    assert status(heartbeat_ago=61) is Status.OFFLINE  # silent: no will needed
    assert status(state="offline", heartbeat_ago=1) is Status.OFFLINE  # its death arrived
    assert status(state="unknown", heartbeat_ago=None) is Status.UNKNOWN  # never heard from


def test_a_birth_after_a_long_silence_counts_as_heard() -> None:
    assert status(heartbeat_ago=3600, seen_ago=2) is Status.ONLINE


def test_the_stations_own_interval_sets_the_staleness_clock() -> None:
    assert status(heartbeat_ago=50, interval=30) is Status.ONLINE
    assert status(heartbeat_ago=61, interval=30) is Status.STALE
    assert status(heartbeat_ago=181, interval=30) is Status.OFFLINE


def test_the_default_stale_threshold_and_page_refresh_fit_in_two_heartbeat_intervals() -> None:
    ops = ServerConfig().ops
    rules = ops.status_rules()
    refresh = ops.page_refresh_s()
    # Stale after 15 s, the snapshot at most 1 s old, a poll every 2 s: 18 s <= 20 s.
    assert (rules.stale_after_intervals, refresh) == (1.5, 2.0)
    assert shown_within_s(rules, refresh) <= 2 * rules.heartbeat_s
    last = NOW - timedelta(seconds=rules.heartbeat_s + 4.5)  # a heartbeat 4.5 s late
    ok = derive_status(
        state="online",
        last_heartbeat_at=last,
        last_seen_at=None,
        heartbeat_s=None,
        now=NOW,
        rules=rules,
    )
    assert ok is Status.ONLINE  # late is not stale
    # The refresh follows the interval; an explicit setting wins; past the promise, 1 s.
    assert fleet_refresh_s(StatusRules(heartbeat_s=30)) == 7.0  # (60 - 45 - 1) / 2
    explicit = ServerConfig.model_validate({"ops": {"fleet_refresh_s": 7}}).ops
    assert explicit.page_refresh_s() == 7
    assert fleet_refresh_s(StatusRules(heartbeat_s=10, stale_after_intervals=2)) == 1.0


WEEKDAYS = Schedule.model_validate(
    {"windows": [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "17:30"}]}
)


def local(day: int, hh: int, mm: int = 0) -> datetime:
    """A time in Ho Chi Minh City in the week of 2026-11-23 (Monday = day 1)."""
    return datetime(2026, 11, 22 + day, hh, mm, tzinfo=HCM)


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        (local(1, 7, 0), True),
        (local(1, 6, 59), False),
        (local(5, 17, 29), True),
        (local(5, 17, 30), False),
        (local(6, 10), False),  # Saturday
        (local(7, 10), False),  # Sunday
    ],
)
def test_weekday_schedule(when: datetime, open_: bool) -> None:
    assert WEEKDAYS.is_open(when) is open_
    assert WEEKDAYS.is_open(when.astimezone(UTC)) is open_  # whatever zone the caller uses


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    night = Schedule.model_validate({"windows": [{"days": [5], "start": "22:00", "end": "06:00"}]})
    assert night.is_open(local(5, 23))
    assert night.is_open(local(6, 5, 59))  # Saturday early morning: Friday's shift
    assert not night.is_open(local(6, 6))
    assert not night.is_open(local(4, 23))  # Thursday night: no shift
    assert not night.is_open(local(5, 5))  # Friday early morning: Thursday's (none)


def test_schedules_in_other_time_zones_and_no_schedule() -> None:
    utc_hours = Schedule.model_validate(
        {"timezone": "UTC", "windows": [{"days": [5], "start": "02:00", "end": "04:00"}]}
    )
    assert utc_hours.is_open(NOW)
    assert in_operating_hours(None, NOW)  # no schedule: always operating


@pytest.mark.parametrize(
    "bad",
    [
        {"windows": []},
        {"windows": [{"days": [0], "start": "07:00", "end": "17:00"}]},
        {"windows": [{"days": [1], "start": "7:00", "end": "17:00"}]},
        {"windows": [{"days": [1], "start": "07:00", "end": "24:00"}]},
        {"timezone": "Mars/Olympus", "windows": [{"days": [1], "start": "07:00", "end": "17:00"}]},
    ],
)
def test_malformed_schedules_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Schedule.model_validate(bad)


T = AlertThresholds()
HEALTHY: dict[str, Any] = {
    "outbox_depth": 3,
    "oldest_pending_age_s": 12,
    "disk_free_mb": 20_000,
    "cpu_temp_c": 55,
    "under_voltage": False,
    "throttled": False,
    "scanners_connected": 1,
    "scanners_expected": 1,
    "clock_synced": True,
    "clock_offset_s": 0.2,
}


def facts(**kw: Any) -> StationFacts:
    base: dict[str, Any] = {
        "station_id": "st-1",
        "status": Status.ONLINE,
        "status_since": NOW - timedelta(hours=1),
        "in_hours": True,
        "heartbeat": dict(HEALTHY),
        "server_offset_s": 0.1,
    }
    hb = kw.pop("hb", {})
    base["heartbeat"].update(hb)
    base.update(kw)
    return StationFacts(**base)


def kinds(f: StationFacts) -> set[AlertKind]:
    return set(evaluate(f, T, NOW).findings)


def test_a_healthy_station_raises_nothing_and_every_rule_is_judged() -> None:
    ev = evaluate(facts(), T, NOW)
    assert ev.findings == {}
    assert ev.judged == frozenset(AlertKind)


@pytest.mark.parametrize(
    ("hb", "kind"),
    [
        ({"oldest_pending_age_s": 901}, AlertKind.BACKLOG_OLD),
        ({"disk_free_mb": 499}, AlertKind.DISK_LOW),
        ({"cpu_temp_c": 80.0}, AlertKind.OVERHEATING),
        ({"throttled": True}, AlertKind.OVERHEATING),
        ({"under_voltage": True}, AlertKind.UNDER_VOLTAGE),
        ({"scanners_connected": 0}, AlertKind.SCANNER_MISSING),
        ({"clock_synced": False}, AlertKind.CLOCK_UNSYNCED),
        ({"clock_offset_s": -31}, AlertKind.CLOCK_UNSYNCED),
    ],
)
def test_each_health_threshold(hb: dict[str, Any], kind: AlertKind) -> None:
    assert kinds(facts(hb=hb)) == {kind}


def test_clock_offset_measured_by_the_server_counts_too() -> None:
    found = evaluate(facts(server_offset_s=3600.0), T, NOW).findings
    assert found[AlertKind.CLOCK_UNSYNCED].detail["offset_s"] == 3600.0


def test_a_growing_backlog_is_compared_with_the_depth_one_window_ago() -> None:
    assert kinds(facts(hb={"outbox_depth": 80}, backlog_before=30)) == {AlertKind.BACKLOG_GROWING}
    assert kinds(facts(hb={"outbox_depth": 80}, backlog_before=31)) == set()
    assert kinds(facts(hb={"outbox_depth": 80}, backlog_before=None)) == set()


def test_offline_alerts_wait_for_the_threshold_and_for_operating_hours() -> None:
    down = {"status": Status.OFFLINE}
    assert kinds(facts(**down, status_since=NOW - timedelta(seconds=119))) == set()
    ev = evaluate(facts(**down, status_since=NOW - timedelta(seconds=120)), T, NOW)
    assert set(ev.findings) == {AlertKind.OFFLINE}
    assert ev.findings[AlertKind.OFFLINE].severity == "critical"
    stale = evaluate(facts(status=Status.STALE, status_since=NOW - timedelta(hours=2)), T, NOW)
    assert set(stale.findings) == {AlertKind.OFFLINE}
    closed = evaluate(facts(**down, status_since=NOW - timedelta(hours=9), in_hours=False), T, NOW)
    assert closed.findings == {}
    assert AlertKind.OFFLINE not in closed.judged  # an alert from opening hours stays open


def test_health_of_a_station_that_is_not_online_is_not_judged() -> None:
    ev = evaluate(facts(status=Status.OFFLINE, status_since=NOW, hb={"disk_free_mb": 1}), T, NOW)
    assert ev.findings == {}
    assert AlertKind.DISK_LOW not in ev.judged  # last known data: leave the alert as it is
    assert AlertKind.OFFLINE in ev.judged


def test_sequence_gaps_alert_after_the_grace_period() -> None:
    young = facts(gap_missing=4, gap_since=NOW - timedelta(seconds=299))
    assert kinds(young) == set()
    old = evaluate(facts(gap_missing=4, gap_since=NOW - timedelta(seconds=300)), T, NOW)
    assert old.findings[AlertKind.SEQUENCE_GAP].detail["missing"] == 4
