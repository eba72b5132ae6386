"""Ops in the web app: the fleet page, station pages, alerts, remote commands, thresholds and
operating hours, as pages (``/ops/...``) and as a JSON API (``/api/ops/...``).

Viewing needs ``station.read`` (scoped to the caller's organisations); commands and alert
actions need ``fleet.operate``; every change goes through ``server.ops`` and is audited there.
The fleet page updates itself by fetching ``/api/ops/fleet`` every ``refresh_s`` of its answer
(``ops.fleet_refresh_s``, by default derived from the heartbeat interval; small inline script,
no external JavaScript).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse
from markupsafe import Markup, escape
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from protocol.topics import STATION_ID_PATTERN
from server.access import Permission, Principal, Scope
from server.config import AlertThresholds, ServerConfig
from server.errors import BadRequestError, NotFoundError
from server.models import (
    Alert,
    FacilitySchedule,
    Notification,
    NotificationDelivery,
    Organisation,
    StationCommand,
    StationRow,
)
from server.ops import alerts as ops_alerts
from server.ops import commands as ops_commands
from server.ops import settings as ops_settings
from server.ops.charts import chart
from server.ops.fleet import StationView, load_fleet
from server.ops.gaps import missing_ranges
from server.ops.history import station_series
from server.ops.i18n import KIND_NAMES, TEXTS, alert_text, duration
from server.ops.monitor import AlertNotifier, status_rules
from server.ops.status import FLEET_SNAPSHOT_S
from server.outbound import delivery_id
from server.web.deps import Caller as ApiCaller
from server.web.deps import Config, Db, PageCaller, check_form_csrf, remote_addr
from server.web.schemas import PathBigId, PathId, Text
from server.web.templating import language, render

log = logging.getLogger(__name__)

api = APIRouter(prefix="/api/ops", tags=["ops"])
pages = APIRouter(prefix="/ops", include_in_schema=False)

StationId = Annotated[str, Path(pattern=f"^{STATION_ID_PATTERN}$")]
CommandName = Literal["identify", "set_setting", "restart", "diagnostics", "resync"]


# --- shared -----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _fleet(
    db: Session, config: ServerConfig, caller: Principal, station_id: str | None = None
) -> list[StationView]:
    scope = caller.require(Permission.STATION_READ)
    return load_fleet(
        db,
        now=_now(),
        rules=status_rules(config),
        default_timezone=config.ops.timezone,
        scope=scope,
        station_id=station_id,
    )


ScopeKey = tuple[tuple[str, ...], bool]


@dataclass
class _Snapshot:
    at: datetime
    views: list[StationView]
    json: dict[ScopeKey, tuple[dict[str, Any], bytes]] = field(default_factory=dict)
    html: dict[tuple[ScopeKey, str], Markup] = field(default_factory=dict)


class FleetCache:
    """The whole fleet, derived at most once per ``ttl_s`` and shared by every request.

    Every ops user's page polls ``/api/ops/fleet``; without sharing, each poll would read and
    derive every station again. A snapshot is filtered by each caller's scope, and the JSON (and
    the page's table body, per language) of each scope is kept with it.

    On demand (tests, a web app without the ops runtime) a request that finds the snapshot older
    than ``ttl_s`` recomputes it, one at a time. With ``keep_warm`` running (started by the ops
    runtime in the server) a background thread refreshes the snapshot, and every scope and
    language asked for in the last ``watched_s``, once per ``ttl_s`` while someone is watching:
    requests then only serve what is ready, whatever the fleet size.
    """

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig,
        *,
        ttl_s: float = FLEET_SNAPSHOT_S,
        watched_s: float = 60.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock
        self.ttl_s = ttl_s
        self.watched_s = watched_s
        self._guard = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._wanted: dict[ScopeKey, tuple[Scope, float]] = {}
        self._wanted_html: dict[tuple[ScopeKey, str], float] = {}
        self._warm = False

    def fleet(self, caller: Principal) -> tuple[dict[str, Any], bytes]:
        scope = caller.require(Permission.STATION_READ)
        key: ScopeKey = (scope.paths, scope.includes_unassigned)
        self._wanted[key] = (scope, time.monotonic())
        snap = self._current()
        cached = snap.json.get(key)
        if cached is None:
            cached = snap.json[key] = self._render_json(snap, scope)
        return cached

    def table_html(self, caller: Principal, lang: str) -> tuple[dict[str, Any], Markup]:
        """The scope's fleet and its table body in ``lang``."""
        data, _ = self.fleet(caller)
        scope = caller.scope(Permission.STATION_READ)
        key = ((scope.paths, scope.includes_unassigned), lang)
        self._wanted_html[key] = time.monotonic()
        snap = self._current()
        html = snap.html.get(key)
        if html is None:
            html = snap.html[key] = fleet_tbody(data, lang)
        return data, html

    def keep_warm(self, stop: threading.Event) -> None:
        """Refresh in the background until ``stop`` is set (a thread body)."""
        self._warm = True
        try:
            while not stop.wait(self.ttl_s):
                now = time.monotonic()
                if not any(now - t < self.watched_s for _, t in self._wanted.values()):
                    continue
                try:
                    self.refresh(now)
                except Exception:  # the next request computes on demand
                    log.exception("refreshing the fleet snapshot failed")
        finally:
            self._warm = False

    def _current(self) -> _Snapshot:
        snap = self._snapshot
        # Kept warm, a snapshot a few periods old is still served rather than waited for.
        limit = self.ttl_s * (3 if self._warm else 1)
        if snap is not None and (self._clock() - snap.at).total_seconds() < limit:
            return snap
        with self._guard:
            snap = self._snapshot
            if snap is None or (self._clock() - snap.at).total_seconds() >= limit:
                snap = self._snapshot = self._load()
            return snap

    def _load(self) -> _Snapshot:
        now = self._clock()
        with Session(self._engine) as db:
            views = load_fleet(
                db,
                now=now,
                rules=status_rules(self._config),
                default_timezone=self._config.ops.timezone,
            )
        return _Snapshot(now, views)

    def _render_json(self, snap: _Snapshot, scope: Scope) -> tuple[dict[str, Any], bytes]:
        views = [v for v in snap.views if scope.covers_path(v.facility_path)]
        data = fleet_json(views, self._config, snap.at)
        data["groups"] = _groups(views)
        return data, json.dumps(data, ensure_ascii=False).encode()

    def refresh(self, now: float | None = None) -> None:
        """Derive a new snapshot and render what was asked for in the last ``watched_s``
        (``now``: ``time.monotonic()``); ``keep_warm`` calls it every ``ttl_s``."""
        now = time.monotonic() if now is None else now
        snap = self._load()
        for key, (scope, asked) in list(self._wanted.items()):
            if now - asked < self.watched_s:
                snap.json[key] = self._render_json(snap, scope)
            else:
                self._wanted.pop(key, None)
        for (key, lang), asked in list(self._wanted_html.items()):
            if now - asked < self.watched_s and key in snap.json:
                snap.html[(key, lang)] = fleet_tbody(snap.json[key][0], lang)
            elif now - asked >= self.watched_s:
                self._wanted_html.pop((key, lang), None)
        self._snapshot = snap


def fleet_cache(app: Any) -> FleetCache:
    """The app's fleet cache (made on first use when the ops runtime did not provide one)."""
    cache: FleetCache | None = getattr(app.state, "ops_fleet_cache", None)
    if cache is None:
        cache = app.state.ops_fleet_cache = FleetCache(app.state.engine, app.state.config)
    return cache


def _cell(value: Any, fmt: str = "{:.0f}", unit: str = "") -> str:
    if value is None:
        return "–"
    return fmt.format(value) + (f" {unit}" if unit else "")


def fleet_tbody(data: dict[str, Any], lang: str) -> Markup:
    """The fleet table's ``<tbody>`` groups (the same markup the page's script renders)."""
    by_id = {s["station_id"]: s for s in data["stations"]}
    label = {k: escape(v[lang]) for k, v in TEXTS.items()}
    kinds = {k: escape(v[lang]) for k, v in KIND_NAMES.items()}
    out: list[str] = []
    for d in data["groups"]:
        for f in d["facilities"]:
            none = TEXTS["unassigned"][lang]
            title = f"{d['name'] or none} › {f['name'] or none}"
            out.append(
                f'<tbody class="group"><tr class="group-head"><th colspan="10">{escape(title)}'
                "</th></tr>"
            )
            for sid in f["stations"]:
                s = by_id[sid]
                st = s["status"]
                name = escape(s["name"] or sid)
                pills = "".join(
                    f'<span class="pill sev-{a["severity"]} a-{a["state"]}">'
                    f"{kinds.get(a['kind'], escape(a['kind']))}</span> "
                    for a in s["alerts"]
                )
                out.append(
                    f'<tr class="st status-{st}" id="st-{sid}" data-status="{st}">'
                    f'<td><a href="/ops/stations/{sid}">{name}<small>{sid}</small></a></td>'
                    f'<td><span class="pill s-{st}">{label[st]}</span></td>'
                    f'<td class="num">{duration(s["heartbeat_age_s"], lang)}</td>'
                    f'<td class="num">{_cell(s["outbox_depth"])}</td>'
                    f'<td class="num">{duration(s["oldest_pending_age_s"], lang)}</td>'
                    f'<td class="num">{_cell(s["scans_today"])}</td>'
                    f'<td class="num">{_cell(s["cpu_temp_c"], unit="°C")}</td>'
                    f'<td class="num">{_cell(s["disk_free_mb"], unit="MiB")}</td>'
                    f'<td class="num">{_cell(s["wifi_signal_dbm"], unit="dBm")}</td>'
                    f"<td>{pills}</td></tr>"
                )
            out.append("</tbody>")
    if not out:
        out.append(f'<tbody><tr><td colspan="10">{label["no_stations"]}</td></tr></tbody>')
    return Markup("".join(out))


def _station(db: Session, config: ServerConfig, caller: Principal, station_id: str) -> StationView:
    views = _fleet(db, config, caller, station_id)
    if not views:
        raise NotFoundError(f"no station {station_id!r}")
    return views[0]


def _notifier(request: Request) -> AlertNotifier:
    runtime = getattr(request.app.state, "ops", None)
    wake = runtime.wake_outbound if runtime is not None else None
    return AlertNotifier.from_config(request.app.state.config, on_enqueued=wake)


def _dispatch(request: Request, station_id: str) -> None:
    runtime = getattr(request.app.state, "ops", None)
    if runtime is not None:
        runtime.dispatcher.flush(station_id)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def station_json(v: StationView, now: datetime) -> dict[str, Any]:
    hb = v.heartbeat
    return {
        "station_id": v.station_id,
        "name": v.name,
        "facility_id": v.facility_id,
        "facility": v.facility_name,
        "district_id": v.district_id,
        "district": v.district_name,
        "status": v.display_status,
        "state": v.status.value,
        "status_since": _iso(v.status_since),
        "in_hours": v.in_hours,
        "last_heartbeat_at": _iso(v.last_heartbeat_at),
        "heartbeat_age_s": round((now - v.last_heartbeat_at).total_seconds(), 1)
        if v.last_heartbeat_at
        else None,
        "agent_version": v.agent_version,
        "outbox_depth": hb.get("outbox_depth"),
        "oldest_pending_age_s": hb.get("oldest_pending_age_s"),
        "scans_today": hb.get("scans_today"),
        "last_scan_at": hb.get("last_scan_at"),
        "cpu_temp_c": hb.get("cpu_temp_c"),
        "disk_free_mb": hb.get("disk_free_mb"),
        "wifi_signal_dbm": hb.get("wifi_signal_dbm"),
        "mqtt_reconnects": hb.get("mqtt_reconnects"),
        "under_voltage": hb.get("under_voltage"),
        "throttled": hb.get("throttled"),
        "clock_synced": hb.get("clock_synced"),
        "clock_offset_s": v.server_offset_s,
        "scanners": [hb.get("scanners_connected"), hb.get("scanners_expected")],
        "gap_missing": v.gap_missing,
        "severity": v.worst_severity,
        "alerts": [
            {"id": a.id, "kind": a.kind, "severity": a.severity, "state": a.state} for a in v.alerts
        ],
    }


def fleet_json(views: list[StationView], config: ServerConfig, now: datetime) -> dict[str, Any]:
    summary: dict[str, int] = {}
    for v in views:
        summary[v.display_status] = summary.get(v.display_status, 0) + 1
    return {
        "generated_at": now.isoformat(),
        "refresh_s": config.ops.page_refresh_s(),
        "summary": summary,
        "alerts_live": sum(len(v.alerts) for v in views),
        "stations": [station_json(v, now) for v in views],
    }


def command_json(row: StationCommand) -> dict[str, Any]:
    return {
        "command_id": row.command_id,
        "station_id": row.station_id,
        "name": row.name,
        "args": row.args,
        "state": row.state,
        "created_at": _iso(row.created_at),
        "actor": row.actor,
        "expires_at": _iso(row.expires_at),
        "sent_at": _iso(row.sent_at),
        "send_count": row.send_count,
        "answered_at": _iso(row.answered_at),
        "ok": row.ok,
        "result": row.result,
    }


def _alerts_query(db: Session, caller: Principal, state: str, station_id: str | None) -> Any:
    scope = caller.require(Permission.STATION_READ)
    q = (
        select(Alert, StationRow.name)
        .join(StationRow, StationRow.station_id == Alert.station_id)
        .where(scope.filter(StationRow.facility_id))
    )
    if state == "live":
        q = q.where(Alert.state != "resolved")
    elif state != "all":
        q = q.where(Alert.state == state)
    if station_id:
        q = q.where(Alert.station_id == station_id)
    return q.order_by(Alert.opened_at.desc())


def _commands(db: Session, station_id: str, limit: int = 20) -> list[StationCommand]:
    return list(
        db.scalars(
            select(StationCommand)
            .where(StationCommand.station_id == station_id)
            .order_by(StationCommand.created_at.desc())
            .limit(limit)
        )
    )


# --- JSON API ---------------------------------------------------------------------------------


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Text | None = Field(None, max_length=500)


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: CommandName
    args: dict[str, Any] = Field(default_factory=dict)
    ttl_s: float | None = Field(
        None, ge=10, le=7 * 86_400, description="Default: ops.command_ttl_s."
    )


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timezone: Text = Field("Asia/Ho_Chi_Minh", max_length=64)
    windows: list[dict[str, Any]] = Field(min_length=1, max_length=50)


@api.get("/fleet")
def api_fleet(request: Request, caller: ApiCaller) -> Response:
    """Every station in scope with its status, place, latest health and live alerts, and the
    district -> facility grouping of their ids (at most a second old)."""
    _, body = fleet_cache(request.app).fleet(caller)
    return Response(body, media_type="application/json")


@api.get("/stations/{station_id}")
def api_station(caller: ApiCaller, db: Db, config: Config, station_id: StationId) -> dict[str, Any]:
    """One station: status, the whole last heartbeat, missing records, recent commands."""
    now = _now()
    v = _station(db, config, caller, station_id)
    ranges, missing = missing_ranges(db, station_id, limit=50) if v.gap_missing else ([], 0)
    return {
        **station_json(v, now),
        "heartbeat": v.heartbeat,
        "missing_ranges": ranges,
        "missing": missing,
        "commands": [command_json(c) for c in _commands(db, station_id)],
    }


@api.get("/stations/{station_id}/history")
def api_history(
    caller: ApiCaller,
    db: Db,
    config: Config,
    station_id: StationId,
    hours: Annotated[int, Query(ge=1, le=24 * 14)] = 24,
) -> dict[str, Any]:
    """Chart series (backlog, scans per hour, temperature, reconnects per hour, disk, Wi-Fi)."""
    _station(db, config, caller, station_id)
    series = station_series(db, station_id, _now() - timedelta(hours=hours))
    return {
        name: {"unit": s.unit, "points": [[at.isoformat(), value] for at, value in s.points]}
        for name, s in series.items()
    }


@api.get("/alerts")
def api_alerts(
    caller: ApiCaller,
    db: Db,
    state: Literal["live", "open", "acknowledged", "resolved", "all"] = "live",
    station_id: Annotated[str | None, Query(pattern=f"^{STATION_ID_PATTERN}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Alerts in scope, newest first (``live``: open and acknowledged)."""
    rows = db.execute(_alerts_query(db, caller, state, station_id).limit(limit)).all()
    return [ops_alerts.alert_json(a, name) for a, name in rows]


@api.post("/alerts/{alert_id}/acknowledge")
def api_acknowledge(
    request: Request, caller: ApiCaller, db: Db, alert_id: PathBigId, body: NoteIn | None = None
) -> dict[str, Any]:
    """Open -> acknowledged: someone is on it (no further notification). Audited."""
    alert = ops_alerts.acknowledge(
        db,
        caller,
        alert_id,
        now=_now(),
        note=body.note if body else None,
        notify=_notifier(request),
        remote_addr=remote_addr(request),
    )
    db.commit()
    return ops_alerts.alert_json(alert)


@api.post("/alerts/{alert_id}/resolve")
def api_resolve(
    request: Request, caller: ApiCaller, db: Db, alert_id: PathBigId, body: NoteIn | None = None
) -> dict[str, Any]:
    """Resolve by hand (a condition that still holds opens a new alert). Audited."""
    alert = ops_alerts.resolve(
        db,
        caller,
        alert_id,
        now=_now(),
        note=body.note if body else None,
        notify=_notifier(request),
        remote_addr=remote_addr(request),
    )
    db.commit()
    return ops_alerts.alert_json(alert)


@api.post("/stations/{station_id}/commands", status_code=201)
def api_command(
    request: Request,
    caller: ApiCaller,
    db: Db,
    config: Config,
    station_id: StationId,
    body: CommandIn,
) -> dict[str, Any]:
    """Queue a remote command; it is sent now if the station is online, else at its next birth,
    until ``ttl_s`` passes. Audited."""
    row = ops_commands.create(
        db,
        caller,
        station_id=station_id,
        name=body.name,
        args=body.args,
        ttl_s=body.ttl_s or config.ops.command_ttl_s,
        now=_now(),
        remote_addr=remote_addr(request),
    )
    db.commit()
    _dispatch(request, station_id)
    return command_json(row)


@api.get("/stations/{station_id}/commands")
def api_commands(
    caller: ApiCaller, db: Db, config: Config, station_id: StationId
) -> list[dict[str, Any]]:
    """The station's most recent commands with their results."""
    _station(db, config, caller, station_id)
    return [command_json(c) for c in _commands(db, station_id, 100)]


@api.get("/commands/{command_id}")
def api_command_get(
    caller: ApiCaller, db: Db, config: Config, command_id: Annotated[Text, Path(max_length=64)]
) -> dict[str, Any]:
    """One command and its result (a diagnostics bundle, for ``diagnostics``)."""
    row = db.get(StationCommand, command_id)
    if row is None:
        raise NotFoundError(f"no command {command_id!r}")
    _station(db, config, caller, row.station_id)
    return command_json(row)


@api.get("/thresholds")
def api_thresholds(caller: ApiCaller, db: Db, config: Config) -> dict[str, Any]:
    """Alert thresholds: the file's defaults, the web app's overrides, and what applies."""
    caller.require(Permission.STATION_READ)
    defaults = config.alerts.thresholds
    return {
        "defaults": defaults.model_dump(),
        "overrides": ops_settings.overrides(db),
        "effective": ops_settings.effective_thresholds(db, defaults).model_dump(),
    }


@api.put("/thresholds")
def api_set_thresholds(
    request: Request,
    caller: ApiCaller,
    db: Db,
    config: Config,
    body: dict[str, float | int | None],
) -> dict[str, Any]:
    """Override thresholds (``null`` resets one). Province-level ``fleet.operate``. Audited."""
    after = ops_settings.set_thresholds(
        db,
        caller,
        dict(body),
        defaults=config.alerts.thresholds,
        now=_now(),
        remote_addr=remote_addr(request),
    )
    db.commit()
    return after.model_dump()


@api.get("/schedules/{facility_id}")
def api_schedule(caller: ApiCaller, db: Db, facility_id: PathId) -> dict[str, Any] | None:
    """A facility's operating hours (``null``: none, always operating)."""
    scope = caller.require(Permission.STATION_READ)
    facility = db.get(Organisation, facility_id)
    if facility is None or facility.kind != "facility" or not scope.covers_path(facility.path):
        raise NotFoundError(f"no facility {facility_id}")
    row = db.get(FacilitySchedule, facility_id)
    return {"timezone": row.timezone, "windows": row.windows} if row else None


@api.put("/schedules/{facility_id}")
def api_set_schedule(
    request: Request, caller: ApiCaller, db: Db, facility_id: PathId, body: ScheduleIn
) -> dict[str, Any]:
    """Set a facility's operating hours. Audited."""
    parsed = ops_settings.set_schedule(
        db, caller, facility_id, body.model_dump(), now=_now(), remote_addr=remote_addr(request)
    )
    db.commit()
    assert parsed is not None
    return parsed.model_dump()


@api.delete("/schedules/{facility_id}", status_code=204)
def api_delete_schedule(
    request: Request, caller: ApiCaller, db: Db, facility_id: PathId
) -> Response:
    """Remove a facility's operating hours (its stations then count as always operating)."""
    ops_settings.set_schedule(
        db, caller, facility_id, None, now=_now(), remote_addr=remote_addr(request)
    )
    db.commit()
    return Response(status_code=204)


@api.get("/deliveries")
def api_deliveries(
    caller: ApiCaller,
    db: Db,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    target: Annotated[Literal["alerts", "results"] | None, Query()] = None,
) -> list[dict[str, Any]]:
    """The outbound delivery log (alert changes and result notifications, one log), newest
    first, without the messages themselves. Province-level only."""
    scope = caller.require(Permission.FLEET_OPERATE)
    if not scope.includes_unassigned:
        raise NotFoundError("the delivery log is province-wide")
    query = select(Notification).order_by(Notification.id.desc()).limit(limit)
    if target is not None:
        query = query.where(Notification.target == target)
    rows = db.scalars(query).all()
    last: dict[int, NotificationDelivery] = {}
    if rows:
        for d in db.scalars(
            select(NotificationDelivery)
            .where(NotificationDelivery.notification_id.in_([m.id for m in rows]))
            .order_by(NotificationDelivery.attempt)
        ):
            last[d.notification_id] = d
    return [
        {
            "id": m.id,
            "delivery_id": delivery_id(m.id),
            "target": m.target,
            "event": m.event,
            "state": m.status,
            "attempts": m.attempts,
            "last_status": last[m.id].status_code if m.id in last else None,
            "last_error": m.last_error,
            "created_at": _iso(m.created_at),
            "next_attempt_at": _iso(m.next_attempt_at) if m.status == "pending" else None,
            "sent_at": _iso(m.sent_at),
        }
        for m in rows
    ]


# --- pages ------------------------------------------------------------------------------------


def _ot(lang: str) -> Any:
    def ot(key: str) -> str:
        entry = TEXTS.get(key)
        return entry[lang] if entry else key

    return ot


def _render(request: Request, name: str, context: dict[str, Any]) -> Response:
    lang = language(request)
    return render(
        request,
        name,
        {
            "kind_name": lambda k: KIND_NAMES.get(k, {}).get(lang, k),
            "dur": lambda s: duration(s, lang),
            **context,
        },
    )


def _groups(views: list[StationView]) -> list[dict[str, Any]]:
    """District -> facility -> station ids, worst first inside a facility."""
    districts: dict[Any, dict[str, Any]] = {}
    for v in sorted(views, key=lambda x: x.problem_rank()):
        d = districts.setdefault(
            v.district_id, {"id": v.district_id, "name": v.district_name, "facilities": {}}
        )
        f = d["facilities"].setdefault(
            v.facility_id, {"id": v.facility_id, "name": v.facility_name, "stations": []}
        )
        f["stations"].append(v.station_id)
    out = sorted(districts.values(), key=lambda d: (d["name"] is None, d["name"] or ""))
    for d in out:
        d["facilities"] = sorted(
            d["facilities"].values(), key=lambda f: (f["name"] is None, f["name"] or "")
        )
    return out


@pages.get("")
def fleet_page(request: Request, caller: PageCaller) -> Response:
    lang = language(request)
    data, body = fleet_cache(request.app).table_html(caller, lang)
    labels = {
        k: TEXTS[k][lang] for k in ("online", "stale", "offline", "offline_closed", "unknown")
    }
    labels["kinds"] = {k: v[lang] for k, v in KIND_NAMES.items()}  # type: ignore[assignment]
    labels["unassigned"] = TEXTS["unassigned"][lang]
    labels["connection_lost"] = TEXTS["connection_lost"][lang]
    return _render(
        request,
        "ops_fleet.html",
        {
            "body": body,
            "data": data,
            "labels_json": Markup(json.dumps(labels, ensure_ascii=False).replace("</", "<\\/")),
            "now": datetime.fromisoformat(data["generated_at"]),
        },
    )


@pages.get("/stations/{station_id}")
def station_page(
    request: Request, caller: PageCaller, db: Db, config: Config, station_id: StationId
) -> Response:
    now = _now()
    lang = language(request)
    v = _station(db, config, caller, station_id)
    start = now - timedelta(hours=24)
    series = station_series(db, station_id, start)
    ot = _ot(lang)
    empty = ot("no_data")
    tz = config.ops.timezone
    charts = [
        chart(series["backlog"].points, title=ot("chart_backlog"), start=start, end=now,
              empty_text=empty, timezone=tz, css_class="chart backlog"),
        chart(series["scans_per_hour"].points, title=ot("chart_scans"), start=start, end=now,
              bars=True, empty_text=empty, timezone=tz, css_class="chart scans"),
        chart(series["temperature"].points, title=ot("chart_temperature"), start=start, end=now,
              empty_text=empty, timezone=tz, css_class="chart temperature"),
        chart(series["reconnects_per_hour"].points, title=ot("chart_reconnects"), start=start,
              end=now, bars=True, empty_text=empty, timezone=tz, css_class="chart reconnects"),
    ]  # fmt: skip
    history = db.execute(_alerts_query(db, caller, "all", station_id).limit(50)).all()
    ranges, missing = missing_ranges(db, station_id, limit=20) if v.gap_missing else ([], 0)
    commands = _commands(db, station_id)
    diagnostics = next((c for c in commands if c.name == "diagnostics" and c.result and c.ok), None)
    return _render(
        request,
        "ops_station.html",
        {
            "v": v,
            "s": station_json(v, now),
            "charts": charts,
            "alerts": [
                (a, alert_text(a.kind, a.detail, v.name or v.station_id, lang)) for a, _ in history
            ],
            "commands": commands,
            "diagnostics": diagnostics,
            "diagnostics_json": json.dumps(diagnostics.result, ensure_ascii=False, indent=2)
            if diagnostics
            else None,
            "ranges": ranges,
            "missing": missing,
            "can_operate": caller.can(Permission.FLEET_OPERATE),
            "now": now,
        },
    )


@pages.post("/stations/{station_id}/commands")
def command_form(
    request: Request,
    caller: PageCaller,
    db: Db,
    config: Config,
    station_id: StationId,
    name: Annotated[CommandName, Form()],
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
    pool_size: Annotated[int | None, Form(ge=1, le=50)] = None,
    test_kind: Annotated[Literal["rt_pcr", "rapid_antigen", ""] | None, Form()] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    args: dict[str, Any] = {}
    if name == "set_setting":
        if pool_size:
            args["pool_size"] = pool_size
        if test_kind:
            args["test_kind"] = test_kind
    ops_commands.create(
        db,
        caller,
        station_id=station_id,
        name=name,
        args=args,
        ttl_s=config.ops.command_ttl_s,
        now=_now(),
        remote_addr=remote_addr(request),
    )
    db.commit()
    _dispatch(request, station_id)
    return RedirectResponse(f"/ops/stations/{station_id}#commands", status_code=303)


@pages.get("/alerts")
def alerts_page(
    request: Request,
    caller: PageCaller,
    db: Db,
    state: Literal["live", "open", "acknowledged", "resolved", "all"] = "live",
) -> Response:
    lang = language(request)
    rows = db.execute(_alerts_query(db, caller, state, None).limit(500)).all()
    return _render(
        request,
        "ops_alerts.html",
        {
            "alerts": [
                (a, name, alert_text(a.kind, a.detail, name or a.station_id, lang))
                for a, name in rows
            ],
            "state": state,
            "can_operate": caller.can(Permission.FLEET_OPERATE),
        },
    )


@pages.post("/alerts/{alert_id}/{action}")
def alert_form(
    request: Request,
    caller: PageCaller,
    db: Db,
    alert_id: PathBigId,
    action: Literal["acknowledge", "resolve"],
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
    note: Annotated[Text | None, Form(max_length=500)] = None,
    back: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    do = ops_alerts.acknowledge if action == "acknowledge" else ops_alerts.resolve
    do(
        db,
        caller,
        alert_id,
        now=_now(),
        note=note or None,
        notify=_notifier(request),
        remote_addr=remote_addr(request),
    )
    db.commit()
    target = (
        back if back and back.startswith("/ops") and not back.startswith("//") else "/ops/alerts"
    )
    return RedirectResponse(target, status_code=303)


@pages.get("/settings")
def settings_page(request: Request, caller: PageCaller, db: Db, config: Config) -> Response:
    scope = caller.require(Permission.STATION_READ)
    defaults = config.alerts.thresholds
    facilities = db.scalars(
        select(Organisation)
        .where(Organisation.kind == "facility", scope.filter(Organisation.id))
        .order_by(Organisation.name)
    ).all()
    schedules = {s.facility_id: s for s in db.scalars(select(FacilitySchedule))}
    operate = caller.can(Permission.FLEET_OPERATE)
    return _render(
        request,
        "ops_settings.html",
        {
            "fields": list(AlertThresholds.model_fields.items()),
            "defaults": defaults.model_dump(),
            "overrides": ops_settings.overrides(db),
            "effective": ops_settings.effective_thresholds(db, defaults).model_dump(),
            "can_edit_thresholds": operate
            and caller.scope(Permission.FLEET_OPERATE).includes_unassigned,
            "can_edit_schedules": operate or caller.can(Permission.STATION_WRITE),
            "facilities": facilities,
            "schedules": {
                fid: json.dumps({"timezone": s.timezone, "windows": s.windows}, ensure_ascii=False)
                for fid, s in schedules.items()
            },
        },
    )


@pages.post("/thresholds")
async def thresholds_form(request: Request, caller: PageCaller, db: Db, config: Config) -> Response:
    form = await request.form()
    token = form.get("csrf_token")
    check_form_csrf(caller, token if isinstance(token, str) else None)
    overrides = ops_settings.overrides(db)
    effective = ops_settings.effective_thresholds(db, config.alerts.thresholds).model_dump()
    changes: dict[str, Any] = {}
    for key in AlertThresholds.model_fields:
        if form.get(f"reset_{key}"):
            if key in overrides:
                changes[key] = None
            continue
        raw = form.get(key)
        if not isinstance(raw, str) or not raw.strip():
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            raise BadRequestError(f"{key}: {raw!r} is not a number") from None
        if value != effective[key]:
            changes[key] = int(value) if value.is_integer() else value
    if changes:
        ops_settings.set_thresholds(
            db,
            caller,
            changes,
            defaults=config.alerts.thresholds,
            now=_now(),
            remote_addr=remote_addr(request),
        )
        db.commit()
    return RedirectResponse("/ops/settings", status_code=303)


@pages.post("/schedules/{facility_id}")
def schedule_form(
    request: Request,
    caller: PageCaller,
    db: Db,
    facility_id: PathId,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
    schedule: Annotated[Text, Form(max_length=10_000)] = "",
) -> Response:
    check_form_csrf(caller, csrf_token)
    parsed: dict[str, Any] | None = None
    if schedule.strip():
        try:
            parsed = json.loads(schedule)
        except json.JSONDecodeError as exc:
            raise BadRequestError(f"the schedule is not valid JSON: {exc.msg}") from None
        if not isinstance(parsed, dict):
            raise BadRequestError("the schedule must be a JSON object")
    ops_settings.set_schedule(
        db, caller, facility_id, parsed, now=_now(), remote_addr=remote_addr(request)
    )
    db.commit()
    return RedirectResponse("/ops/settings", status_code=303)
