"""The ops monitor on SQLite and PostgreSQL: status, history, alerts from open to resolved,
sequence gaps, thresholds and schedules, with everything a person does audited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from server.config import AlertThresholds, ServerConfig
from server.errors import ConflictError, ForbiddenError, NotFoundError
from server.ingest import classify, store_resilient
from server.models import (
    Alert,
    AuditEntry,
    Notification,
    Role,
    StationOpsState,
    StationRow,
    StationSample,
)
from server.ops import alerts as ops_alerts
from server.ops import settings as ops_settings
from server.ops.fleet import load_fleet
from server.ops.history import prune, station_series
from server.ops.monitor import AlertNotifier, OpsMonitor, status_rules
from server.ops.rules import AlertKind
from server.ops.status import Status
from server.web.ops import FleetCache
from tests.server.factories import message, record
from tests.server.ops_helpers import (
    Tree,
    add_station,
    heartbeat,
    ingest,
    org_tree,
    principal,
    status,
)

CONFIG = ServerConfig()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def tree(engine: Engine) -> Tree:
    t = org_tree(engine)
    add_station(engine, "st-1", t.facility, "Bàn 1")
    add_station(engine, "st-2", t.other_facility, "Bàn 2")
    return t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def monitor(engine: Engine, clock: Clock) -> Iterator[OpsMonitor]:
    yield OpsMonitor(
        engine=engine, config=CONFIG, notify=AlertNotifier(enabled=True, clock=clock), clock=clock
    )


def live(engine: Engine) -> dict[tuple[str, str], str]:
    with Session(engine) as s:
        return {
            (a.station_id, a.kind): a.state
            for a in s.scalars(select(Alert).where(Alert.active_key.is_not(None)))
        }


def events(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as s:
        rows = s.scalars(select(Notification).order_by(Notification.id)).all()
        return [
            (d.event, d.payload["alert"]["station_id"], d.payload["alert"]["kind"]) for d in rows
        ]


def test_heartbeats_keep_one_sample_per_step_with_the_servers_view_of_the_clock(
    engine: Engine, tree: Tree, clock: Clock
) -> None:
    t0 = clock.now.replace(second=0)
    ingest(
        engine,
        heartbeat("st-1", t0 + timedelta(seconds=1), outbox_depth=5, scans_today=10),
        heartbeat("st-1", t0 + timedelta(seconds=11), outbox_depth=6, scans_today=11),
    )
    late_clock = t0 + timedelta(seconds=61)
    msg = heartbeat("st-1", late_clock, outbox_depth=7, scans_today=12)
    msg = type(msg)(msg.topic, msg.payload, late_clock + timedelta(seconds=2.5))  # arrives later
    ingest(engine, msg)
    with Session(engine) as s:
        samples = s.scalars(select(StationSample).order_by(StationSample.at)).all()
        station = s.get(StationRow, "st-1")
        assert station is not None
    assert [x.outbox_depth for x in samples] == [5, 7]  # the first of each minute
    assert samples[-1].clock_offset_s == pytest.approx(-2.5)
    assert station.last_heartbeat_at == late_clock + timedelta(seconds=2.5)
    with Session(engine) as s:
        series = station_series(s, "st-1", t0 - timedelta(hours=1))
    assert [v for _, v in series["backlog"].points] == [5.0, 7.0]
    assert sum(v for _, v in series["scans_per_hour"].points) == 2.0


def test_status_goes_stale_then_offline_and_the_alert_opens_then_resolves_itself(
    engine: Engine, tree: Tree, clock: Clock, monitor: OpsMonitor
) -> None:
    ingest(engine, status("st-1", "online", 1), heartbeat("st-1", clock.now))
    monitor.evaluate()
    assert _status(engine, "st-1") == "online"
    clock.advance(25)
    monitor.evaluate()
    assert _status(engine, "st-1") == "stale"
    clock.advance(40)
    monitor.evaluate()
    assert _status(engine, "st-1") == "offline"
    assert live(engine) == {}  # not yet offline_after_s (120 s of silence)
    clock.advance(60)
    done = monitor.evaluate()
    assert [(a.station_id, a.kind) for a in done.opened] == [("st-1", "offline")]
    assert live(engine) == {("st-1", "offline"): "open"}
    assert events(engine) == [("alert.opened", "st-1", "offline")]
    monitor.evaluate()  # still down: the same alert, no new notification
    assert len(events(engine)) == 1
    ingest(engine, status("st-1", "online", 2), heartbeat("st-1", clock.advance(5)))
    done = monitor.evaluate()
    assert [(a.station_id, a.kind) for a in done.resolved] == [("st-1", "offline")]
    assert live(engine) == {}
    assert events(engine)[-1] == ("alert.resolved", "st-1", "offline")
    with Session(engine) as s:
        alert = s.scalars(select(Alert)).one()
        assert alert.state == "resolved" and alert.resolved_by is None  # automatic
        delivery = s.scalars(select(Notification)).first()
        assert delivery is not None
        text = delivery.payload["alert"]["text"]
    assert "Bàn 1" in text["vi"] and "during operating hours" in text["en"]


def test_a_death_makes_a_station_offline_at_once_and_a_stale_death_does_not(
    engine: Engine, tree: Tree, clock: Clock, monitor: OpsMonitor
) -> None:
    ingest(engine, status("st-1", "online", 4), heartbeat("st-1", clock.now))
    ingest(engine, status("st-1", "offline", 3))  # the will of an older connection
    monitor.evaluate()
    assert _status(engine, "st-1") == "online"
    ingest(engine, status("st-1", "offline", 4))
    monitor.evaluate()
    assert _status(engine, "st-1") == "offline"


def test_outside_operating_hours_an_offline_station_raises_nothing(
    engine: Engine, tree: Tree, clock: Clock, monitor: OpsMonitor
) -> None:
    ops = principal(engine, Role.OPS, tree.province)
    # Open only on the weekday three days from now: not today in the facility's time zone
    # (up to a day off UTC), whatever the hour this runs at.
    closed_day = (clock.now.astimezone(UTC).isoweekday() + 2) % 7 + 1
    with Session(engine) as s, s.begin():
        ops_settings.set_schedule(
            s,
            ops,
            tree.facility,
            {"windows": [{"days": [closed_day], "start": "00:00", "end": "23:59"}]},
            now=clock.now,
        )
    ingest(engine, status("st-1", "online", 1), heartbeat("st-1", clock.now))
    ingest(engine, status("st-1", "offline", 1))
    clock.advance(3600)
    monitor.evaluate()
    assert live(engine) == {}
    with Session(engine) as s:
        [view] = load_fleet(
            s, now=clock.now, rules=status_rules(CONFIG), default_timezone="UTC", station_id="st-1"
        )
    assert view.status is Status.OFFLINE and view.display_status == "offline_closed"
    with Session(engine) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "ops.schedule")
            )
            == 1
        )


def test_health_alerts_open_and_clear_with_the_heartbeats(
    engine: Engine, tree: Tree, clock: Clock, monitor: OpsMonitor
) -> None:
    ingest(
        engine,
        status("st-1", "online", 1),
        heartbeat("st-1", clock.now, disk_free_mb=100.0, under_voltage=True, scanners_connected=0),
    )
    monitor.evaluate()
    assert set(live(engine)) == {
        ("st-1", "disk_low"),
        ("st-1", "under_voltage"),
        ("st-1", "scanner_missing"),
    }
    ingest(engine, heartbeat("st-1", clock.advance(10), disk_free_mb=100.0))
    monitor.evaluate()
    assert set(live(engine)) == {("st-1", "disk_low")}
    ingest(engine, status("st-1", "offline", 1))  # offline: its last disk reading is old news
    clock.advance(10)
    monitor.evaluate()
    assert ("st-1", "disk_low") in live(engine)


def test_ops_acknowledge_and_resolve_alerts_in_their_scope_and_it_is_audited(
    engine: Engine, tree: Tree, clock: Clock, monitor: OpsMonitor
) -> None:
    ingest(engine, status("st-2", "online", 1), heartbeat("st-2", clock.now, cpu_temp_c=85.0))
    monitor.evaluate()
    with Session(engine) as s:
        alert_id = s.scalars(select(Alert.id)).one()
    ops_elsewhere = principal(engine, Role.OPS, tree.facility, "ops-q1")  # F1 only; alert is F2
    ops = principal(engine, Role.OPS, tree.province, "ops-hcm")
    staff = principal(engine, Role.SAMPLING_STAFF, tree.province, "staff")
    notify = AlertNotifier(enabled=True, clock=clock)
    with Session(engine) as s:
        with pytest.raises(NotFoundError):
            ops_alerts.acknowledge(
                s, ops_elsewhere, alert_id, now=clock.now, note=None, notify=notify
            )
        with pytest.raises(ForbiddenError):
            ops_alerts.acknowledge(s, staff, alert_id, now=clock.now, note=None, notify=notify)
    with Session(engine) as s, s.begin():
        ops_alerts.acknowledge(s, ops, alert_id, now=clock.now, note="đang xử lý", notify=notify)
    with Session(engine) as s, pytest.raises(ConflictError):
        ops_alerts.acknowledge(s, ops, alert_id, now=clock.now, note=None, notify=notify)
    monitor.evaluate()
    assert live(engine) == {("st-2", "overheating"): "acknowledged"}
    with Session(engine) as s, s.begin():
        ops_alerts.resolve(s, ops, alert_id, now=clock.now, note="fan replaced", notify=notify)
    ingest(engine, heartbeat("st-2", clock.advance(10), cpu_temp_c=85.0))
    monitor.evaluate()  # still hot: a manual resolution cannot hide it, a new alert opens
    assert live(engine) == {("st-2", "overheating"): "open"}
    with Session(engine) as s:
        actions = s.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.object_id).order_by(
                AuditEntry.id
            )
        ).all()
    assert [(a, who) for a, who, _ in actions] == [
        ("alert.acknowledge", "ops-hcm"),
        ("alert.resolve", "ops-hcm"),
    ]
    assert {oid for _, _, oid in actions} == {str(alert_id)}
    assert [e for e, _, _ in events(engine)] == [
        "alert.opened",
        "alert.acknowledged",
        "alert.resolved",
        "alert.opened",
    ]


def test_sequence_gaps_alert_after_the_grace_period_and_clear_when_filled(
    engine: Engine, tree: Tree, clock: Clock, monitor: OpsMonitor
) -> None:
    records = [record("st-1", seq, "scan", code=f"T{seq}") for seq in range(1, 8)]
    store_resilient(engine, classify([message(r) for r in records if r.seq not in (3, 4, 6)]))
    ingest(engine, status("st-1", "online", 1), heartbeat("st-1", clock.now))
    monitor.evaluate()
    with Session(engine) as s:
        state = s.get(StationOpsState, "st-1")
        assert state is not None and state.gap_missing == 3
        from server.ops.gaps import missing_ranges

        assert missing_ranges(s, "st-1") == ([(3, 4), (6, 6)], 3)
    assert live(engine) == {}
    ingest(engine, heartbeat("st-1", clock.advance(301)))
    monitor._last_gap_check = 0
    monitor.evaluate()
    assert live(engine) == {("st-1", "sequence_gap"): "open"}
    store_resilient(engine, classify([message(r) for r in records if r.seq in (3, 4, 6)]))
    ingest(engine, heartbeat("st-1", clock.advance(5)))
    monitor._last_gap_check = 0
    monitor.evaluate()
    assert live(engine) == {}


def test_thresholds_set_centrally_override_the_file_and_can_be_reset(
    engine: Engine, tree: Tree, clock: Clock, monitor: OpsMonitor
) -> None:
    ingest(engine, status("st-1", "online", 1), heartbeat("st-1", clock.now, cpu_temp_c=72.0))
    monitor.evaluate()
    assert live(engine) == {}
    admin = principal(engine, Role.PROVINCIAL_ADMIN, tree.province, "admin")
    district_ops = principal(engine, Role.OPS, tree.district, "ops-q1")
    defaults = CONFIG.alerts.thresholds
    with Session(engine) as s, pytest.raises(ForbiddenError):
        ops_settings.set_thresholds(
            s, district_ops, {"cpu_temp_max_c": 70}, defaults=defaults, now=clock.now
        )
    with Session(engine) as s, s.begin():
        after = ops_settings.set_thresholds(
            s, admin, {"cpu_temp_max_c": 70}, defaults=defaults, now=clock.now
        )
    assert after.cpu_temp_max_c == 70
    monitor.evaluate()
    assert live(engine) == {("st-1", "overheating"): "open"}
    with Session(engine) as s, s.begin():
        after = ops_settings.set_thresholds(
            s, admin, {"cpu_temp_max_c": None}, defaults=defaults, now=clock.now
        )
        assert ops_settings.effective_thresholds(s, defaults) == AlertThresholds()
    monitor.evaluate()
    assert live(engine) == {}
    with Session(engine) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "ops.thresholds")
            )
            == 2
        )


def test_history_is_thinned_then_deleted(engine: Engine, tree: Tree, clock: Clock) -> None:
    start = clock.now - timedelta(days=20)
    with Session(engine) as s, s.begin():
        for minute in range(0, 20 * 24 * 60, 5):  # a sample every 5 minutes for 20 days
            at = start + timedelta(minutes=minute)
            s.add(
                StationSample(
                    station_id="st-1", bucket=int(at.timestamp()) // 60, at=at, outbox_depth=1
                )
            )
    with Session(engine) as s, s.begin():
        prune(s, clock.now, step_s=60, full_hours=24, coarse_step_s=3600, days=14)
    with Session(engine) as s:
        ats = list(s.scalars(select(StationSample.at).order_by(StationSample.at)))
    assert min(ats) >= clock.now - timedelta(days=14)
    recent = [a for a in ats if a >= clock.now - timedelta(hours=24)]
    older = [a for a in ats if a < clock.now - timedelta(hours=24)]
    assert len(recent) == pytest.approx(24 * 12, abs=1)  # full resolution kept
    assert len(older) == pytest.approx(13 * 24, abs=2)  # one an hour


def _status(engine: Engine, station_id: str) -> str:
    with Session(engine) as s:
        state = s.get(StationOpsState, station_id)
        assert state is not None
        return state.status


def test_alert_kinds_have_texts_in_both_languages() -> None:
    from server.ops.i18n import ALERT_TEXTS, KIND_NAMES

    assert set(ALERT_TEXTS) == set(KIND_NAMES) == {k.value for k in AlertKind}


def test_a_hung_station_shows_as_stale_on_the_fleet_page_within_two_heartbeat_intervals(
    engine: Engine, tree: Tree, clock: Clock
) -> None:
    """The real fleet snapshot on the clock seam: heartbeats every interval, then none (a hung
    agent whose connection stays up); three open pages poll at the period the fleet API tells
    them, at different phases, while the snapshot is refreshed every second as the server's
    ``keep_warm`` does. Each page sees "stale" at most two intervals after the last heartbeat,
    and never while heartbeats arrive."""
    config = ServerConfig()  # the defaults: 10 s heartbeats
    interval = config.ops.heartbeat_s
    viewer = principal(engine, Role.OPS, tree.province, "ops-hcm")
    cache = FleetCache(engine, config, clock=clock)
    start = clock.now
    ingest(engine, status("st-1", "online", 1, at=start), heartbeat("st-1", start))
    refresh_s = cache.fleet(viewer)[0]["refresh_s"]
    assert refresh_s == config.ops.page_refresh_s() <= interval / 2
    step = 0.25
    phases = (0.25, refresh_s / 2, refresh_s - step)  # when each page first polls
    next_poll = [start + timedelta(seconds=p) for p in phases]
    next_snapshot = start + timedelta(seconds=cache.ttl_s)
    last_heartbeat = start
    hung_at = start + timedelta(seconds=6 * interval)  # the last heartbeat
    first_stale: list[datetime | None] = [None] * len(phases)
    while clock.now < hung_at + timedelta(seconds=3 * interval):
        clock.advance(step)
        if clock.now <= hung_at and clock.now >= last_heartbeat + timedelta(seconds=interval):
            last_heartbeat = clock.now
            ingest(engine, heartbeat("st-1", clock.now))
        if clock.now >= next_snapshot:
            cache.refresh()
            next_snapshot += timedelta(seconds=cache.ttl_s)
        for page, due in enumerate(next_poll):
            if clock.now < due:
                continue
            next_poll[page] = due + timedelta(seconds=refresh_s)
            shown = cache.fleet(viewer)[0]["stations"][0]["status"]
            if clock.now <= hung_at:
                assert shown == "online", (page, clock.now - start)
            elif shown == "stale" and first_stale[page] is None:
                first_stale[page] = clock.now
    assert last_heartbeat == hung_at
    for seen in first_stale:
        assert seen is not None
        assert timedelta(seconds=interval) < seen - hung_at <= timedelta(seconds=2 * interval)
