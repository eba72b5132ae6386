"""The ops monitor: every ``ops.evaluate_s`` it derives each station's status, looks for
sequence gaps, evaluates the alert rules, opens and resolves alerts, expires commands; once an
hour it thins the heartbeat history.

One monitor runs per server (in the web process, on its own thread). Everything it does is a
function of the database, so a restarted server picks up where it left off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server import outbound
from server.config import ServerConfig
from server.models import Alert, StationOpsState, StationRow
from server.ops import alerts, commands, gaps, history
from server.ops.alerts import Notifier, alert_json
from server.ops.fleet import StationView, load_fleet
from server.ops.rules import Evaluation, StationFacts, evaluate
from server.ops.settings import effective_thresholds
from server.ops.status import StatusRules

log = logging.getLogger(__name__)

GAP_CHECK_S = 30.0
GAP_STATIONS_PER_PASS = 50
PRUNE_EVERY_S = 3600.0


def status_rules(config: ServerConfig) -> StatusRules:
    return config.ops.status_rules()


class AlertNotifier:
    """Queues alert changes for the ``alerts`` target of the outbound transport (when it is
    configured: ``outbound.alerts.webhook_url``), in the transaction of the change.

    ``on_enqueued`` (the outbound worker's wake-up) is called after queueing.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        on_enqueued: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.enabled = enabled
        self._on_enqueued = on_enqueued
        self._clock = clock

    @classmethod
    def from_config(
        cls, config: ServerConfig, on_enqueued: Callable[[], None] | None = None
    ) -> AlertNotifier:
        return cls(enabled=bool(config.outbound.alerts.webhook_url), on_enqueued=on_enqueued)

    def __call__(self, session: Session, event: str, alert: Alert) -> None:
        if not self.enabled:
            return
        session.flush()  # the alert's id names the message
        station = session.get(StationRow, alert.station_id)
        payload = {
            "alert": alert_json(alert, station.name if station else None),
            "station": {
                "station_id": alert.station_id,
                "name": station.name if station else None,
                "facility_id": station.facility_id if station else None,
            },
        }
        outbound.enqueue(
            session,
            outbound.ALERTS,
            event,
            payload,
            dedup_key=f"alert:{alert.id}:{event}",
            now=self._clock(),
        )
        if self._on_enqueued is not None:
            self._on_enqueued()


@dataclass
class Pass:
    """What one evaluation did (for logs and tests)."""

    stations: int
    status_changes: int
    opened: list[Alert]
    resolved: list[Alert]
    expired_commands: int


class OpsMonitor:
    """Args:
    engine: the database.
    config: the server configuration (status rules, thresholds, history settings).
    notify: where alert changes go (``AlertNotifier``).
    clock: now, timezone-aware.
    on_pass: called after each evaluation (the command dispatcher refreshes its list).
    """

    def __init__(
        self,
        *,
        engine: Engine,
        config: ServerConfig,
        notify: Notifier,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_pass: Callable[[Pass], None] | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        self._notify = notify
        self._clock = clock
        self._on_pass = on_pass
        self._rules = status_rules(config)
        self._last_gap_check = 0.0
        self._last_prune = 0.0
        self.passes = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                done = self.evaluate()
                if self._on_pass is not None:
                    self._on_pass(done)
                if time.monotonic() - self._last_prune >= PRUNE_EVERY_S:
                    self._last_prune = time.monotonic()
                    self.prune()
            except Exception:  # a database hiccup: try again next time
                log.exception("ops evaluation failed")
            stop.wait(max(0.1, self._config.ops.evaluate_s - (time.monotonic() - started)))

    def evaluate(self) -> Pass:
        """One pass over the fleet (one transaction)."""
        now = self._clock()
        ops = self._config.ops
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            views = load_fleet(session, now=now, rules=self._rules, default_timezone=ops.timezone)
            states = {s.station_id: s for s in session.scalars(select(StationOpsState))}
            changes = self._record_statuses(session, views, states, now)
            if time.monotonic() - self._last_gap_check >= GAP_CHECK_S:
                self._last_gap_check = time.monotonic()
                self._check_gaps(session, views, states, now)
            thresholds = effective_thresholds(session, self._config.alerts.thresholds)
            window = timedelta(seconds=thresholds.backlog_growth_window_s)
            before = history.backlog_at(
                session, now - window, timedelta(seconds=max(2 * ops.history_step_s, 120))
            )
            evaluations: dict[str, tuple[int | None, Evaluation]] = {}
            for v in views:
                state = states.get(v.station_id)
                facts = StationFacts(
                    station_id=v.station_id,
                    status=v.status,
                    status_since=v.status_since,
                    in_hours=v.in_hours,
                    heartbeat=v.heartbeat,
                    server_offset_s=v.server_offset_s,
                    backlog_before=before.get(v.station_id),
                    gap_missing=state.gap_missing if state else 0,
                    gap_since=state.gap_since if state else None,
                )
                evaluations[v.station_id] = (v.facility_id, evaluate(facts, thresholds, now))
            live_ids = set(
                session.scalars(select(Alert.station_id).where(Alert.active_key.is_not(None)))
            )
            synced = alerts.sync(
                session,
                evaluations,
                now=now,
                notify=self._notify,
                retired=live_ids - set(evaluations),
            )
            expired = commands.expire(session, now=now)
        for a in synced.opened:
            log.warning("alert opened: %s %s %s", a.station_id, a.kind, a.detail)
        for a in synced.resolved:
            log.info("alert resolved: %s %s", a.station_id, a.kind)
        self.passes += 1
        return Pass(len(views), changes, synced.opened, synced.resolved, len(expired))

    def _record_statuses(
        self,
        session: Session,
        views: list[StationView],
        states: dict[str, StationOpsState],
        now: datetime,
    ) -> int:
        changed = 0
        for v in views:
            state = states.get(v.station_id)
            if state is None:
                state = StationOpsState(
                    station_id=v.station_id,
                    status=v.status.value,
                    status_since=v.status_since,
                    gap_missing=0,
                    updated_at=now,
                )
                session.add(state)
                states[v.station_id] = state
                changed += 1
            elif state.status != v.status.value:
                log.info("station %s: %s -> %s", v.station_id, state.status, v.status.value)
                state.status, state.status_since, state.updated_at = (
                    v.status.value,
                    v.status_since,
                    now,
                )
                changed += 1
        return changed

    def _check_gaps(
        self,
        session: Session,
        views: list[StationView],
        states: dict[str, StationOpsState],
        now: datetime,
    ) -> None:
        suspected = gaps.suspected_missing(session)
        # Worst first, a bounded number per pass: the exact count reads the station's records.
        for sid in sorted(suspected, key=lambda s: -suspected[s])[:GAP_STATIONS_PER_PASS]:
            state = states.get(sid)
            if state is None:
                continue
            _, missing = gaps.missing_ranges(session, sid, limit=0)
            if missing and not state.gap_missing:
                state.gap_since = now
            elif not missing:
                state.gap_since = None
            state.gap_missing = missing
        for sid, state in states.items():
            if sid not in suspected and state.gap_missing:
                state.gap_missing, state.gap_since = 0, None

    def prune(self) -> int:
        ops = self._config.ops
        with Session(self._engine) as session, session.begin():
            deleted = history.prune(
                session,
                self._clock(),
                step_s=ops.history_step_s,
                full_hours=ops.history_full_hours,
                coarse_step_s=ops.history_coarse_step_s,
                days=ops.history_days,
            )
        if deleted:
            log.info("heartbeat history: %d old samples thinned or deleted", deleted)
        return deleted
