"""Prometheus metrics of the fleet and of the server's ops side, with bounded cardinality.

Per-station series (``swabline_station_*``, label ``station``) exist for at most
``ops.metrics_max_stations`` stations, chosen worst first (critical alerts, offline in
operating hours, stale, warnings, then by id), so the stations worth a graph always have one.
Every station, labelled or not, is counted in the per-facility series
(``swabline_facility_*``, labels ``district`` and ``facility``: organisation codes), which exist
for at most ``ops.metrics_max_facilities`` facilities (the largest); the rest are summed under
``facility="other"``. Fleet totals (``swabline_fleet_*``) have only small fixed label sets.
The number of series is therefore bounded by the configuration, not by the fleet size.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from server.config import ServerConfig
from server.models import Notification, StationCommand
from server.ops.fleet import StationView, load_fleet
from server.ops.monitor import status_rules
from server.ops.rules import SEVERITY, AlertKind

STATUSES = ("online", "stale", "offline", "offline_closed", "unknown")
OTHER = "other"
NONE = "none"

Metric = GaugeMetricFamily | CounterMetricFamily

Reading = Callable[[StationView, datetime], float | None]

STATION_GAUGES: dict[str, tuple[str, Reading]] = {
    "swabline_station_up": (
        "1 if the station is online, else 0",
        lambda v, _now: 1.0 if v.status.value == "online" else 0.0,
    ),
    "swabline_station_in_operating_hours": (
        "1 if its facility is open now (or has no schedule)",
        lambda v, _now: 1.0 if v.in_hours else 0.0,
    ),
    "swabline_station_last_heartbeat_age_seconds": (
        "Seconds since the last heartbeat",
        lambda v, now: (now - v.last_heartbeat_at).total_seconds() if v.last_heartbeat_at else None,
    ),
    "swabline_station_outbox_depth": (
        "Records waiting on the station",
        lambda v, _now: _f(v.hb("outbox_depth")),
    ),
    "swabline_station_oldest_pending_age_seconds": (
        "Age of the oldest record waiting on the station",
        lambda v, _now: _f(v.hb("oldest_pending_age_s")),
    ),
    "swabline_station_scans_today": (
        "Scans since local midnight",
        lambda v, _now: _f(v.hb("scans_today")),
    ),
    "swabline_station_cpu_temperature_celsius": (
        "CPU temperature",
        lambda v, _now: _f(v.hb("cpu_temp_c")),
    ),
    "swabline_station_load_average": (
        "One-minute load average",
        lambda v, _now: _f(v.hb("load_avg")),
    ),
    "swabline_station_memory_available_bytes": (
        "Memory available",
        lambda v, _now: _mib(v.hb("mem_available_mb")),
    ),
    "swabline_station_disk_free_bytes": (
        "Free disk space",
        lambda v, _now: _mib(v.hb("disk_free_mb")),
    ),
    "swabline_station_wifi_signal_dbm": (
        "Wi-Fi signal level",
        lambda v, _now: _f(v.hb("wifi_signal_dbm")),
    ),
    "swabline_station_mqtt_reconnects": (
        "Broker reconnections since the agent started",
        lambda v, _now: _f(v.hb("mqtt_reconnects")),
    ),
    "swabline_station_under_voltage": (
        "1 while the Pi reports under-voltage",
        lambda v, _now: _flag(v.hb("under_voltage")),
    ),
    "swabline_station_throttled": (
        "1 while the Pi throttles",
        lambda v, _now: _flag(v.hb("throttled")),
    ),
    "swabline_station_clock_offset_seconds": (
        "Station clock minus server clock (measured by the server)",
        lambda v, _now: v.server_offset_s,
    ),
    "swabline_station_clock_synced": (
        "1 if the station's clock is NTP-synchronised",
        lambda v, _now: _flag(v.hb("clock_synced")),
    ),
    "swabline_station_sequence_missing": (
        "Records missing from the station's sequence",
        lambda v, _now: float(v.gap_missing),
    ),
    "swabline_station_alerts_open": (
        "Live (open or acknowledged) alerts",
        lambda v, _now: float(len(v.alerts)),
    ),
}


def _f(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mib(value: object) -> float | None:
    f = _f(value)
    return None if f is None else f * 1024 * 1024


def _flag(value: object) -> float | None:
    return None if not isinstance(value, bool) else float(value)


class FleetCollector(Collector):
    """Collects from the database at scrape time (one ``load_fleet`` per scrape)."""

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock
        self._rules = status_rules(config)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected lazily: no database access at registration

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        with Session(self._engine) as session:
            views = load_fleet(
                session, now=now, rules=self._rules, default_timezone=self._config.ops.timezone
            )
            # Sent messages are not counted: their number grows with every result.
            deliveries = session.execute(
                select(Notification.target, Notification.status, func.count())
                .where(Notification.status.in_(("pending", "failed")))
                .group_by(Notification.target, Notification.status)
            ).all()
            command_states = session.execute(
                select(StationCommand.name, StationCommand.state, func.count()).group_by(
                    StationCommand.name, StationCommand.state
                )
            ).all()
        yield from self._fleet(views)
        yield from self._facilities(views)
        yield from self._stations(views, now)
        out = GaugeMetricFamily(
            "swabline_outbound_deliveries",
            "Outbound messages waiting (pending) or given up (failed), by target",
            labels=["target", "state"],
        )
        for target, state, n in deliveries:
            out.add_metric([target, state], n)
        yield out
        cmd = GaugeMetricFamily(
            "swabline_commands", "Remote commands by name and state", labels=["name", "state"]
        )
        for name, state, n in command_states:
            cmd.add_metric([name, state], n)
        yield cmd

    def _fleet(self, views: list[StationView]) -> Iterator[Metric]:
        by_status = Counter(v.display_status for v in views)
        g = GaugeMetricFamily(
            "swabline_fleet_stations",
            "Stations by status (offline_closed: offline outside operating hours)",
            labels=["status"],
        )
        for status in STATUSES:
            g.add_metric([status], by_status.get(status, 0))
        yield g
        alerts = Counter((a.kind, a.severity, a.state) for v in views for a in v.alerts)
        a = GaugeMetricFamily(
            "swabline_fleet_alerts",
            "Live alerts by kind, severity and state (open, acknowledged)",
            labels=["kind", "severity", "state"],
        )
        for kind in AlertKind:
            for state in ("open", "acknowledged"):
                a.add_metric(
                    [kind.value, SEVERITY[kind], state],
                    alerts.get((kind.value, SEVERITY[kind], state), 0),
                )
        yield a
        yield GaugeMetricFamily(
            "swabline_fleet_outbox_depth",
            "Records waiting on every station",
            value=sum(_f(v.hb("outbox_depth")) or 0 for v in views),
        )
        yield GaugeMetricFamily(
            "swabline_fleet_scans_today",
            "Scans today on every station",
            value=sum(_f(v.hb("scans_today")) or 0 for v in views),
        )

    def _facilities(self, views: list[StationView]) -> Iterator[Metric]:
        cap = self._config.ops.metrics_max_facilities
        sizes = Counter(v.facility_code or NONE for v in views)
        kept = {code for code, _ in sizes.most_common(cap)}
        counts: dict[tuple[str, str, str], int] = defaultdict(int)
        depth: dict[tuple[str, str], float] = defaultdict(float)
        scans: dict[tuple[str, str], float] = defaultdict(float)
        for v in views:
            code = v.facility_code or NONE
            key = (v.district_code or NONE, code) if code in kept else (OTHER, OTHER)
            counts[(*key, v.display_status)] += 1
            depth[key] += _f(v.hb("outbox_depth")) or 0
            scans[key] += _f(v.hb("scans_today")) or 0
        st = GaugeMetricFamily(
            "swabline_facility_stations",
            "Stations per facility and status",
            labels=["district", "facility", "status"],
        )
        for (district, facility, status), n in sorted(counts.items()):
            st.add_metric([district, facility, status], n)
        yield st
        d = GaugeMetricFamily(
            "swabline_facility_outbox_depth",
            "Records waiting on the facility's stations",
            labels=["district", "facility"],
        )
        s = GaugeMetricFamily(
            "swabline_facility_scans_today",
            "Scans today on the facility's stations",
            labels=["district", "facility"],
        )
        for key in sorted(depth):
            d.add_metric(list(key), depth[key])
            s.add_metric(list(key), scans[key])
        yield d
        yield s

    def _stations(self, views: list[StationView], now: datetime) -> Iterator[Metric]:
        cap = self._config.ops.metrics_max_stations
        chosen = sorted(views, key=lambda v: v.problem_rank())[:cap]
        yield GaugeMetricFamily(
            "swabline_fleet_stations_labelled",
            "Stations with their own swabline_station_* series (ops.metrics_max_stations)",
            value=len(chosen),
        )
        families = {
            name: GaugeMetricFamily(name, doc, labels=["station", "facility"])
            for name, (doc, _) in STATION_GAUGES.items()
        }
        for v in chosen:
            labels = [v.station_id, v.facility_code or NONE]
            for name, (_, reading) in STATION_GAUGES.items():
                x = reading(v, now)
                if x is not None:
                    families[name].add_metric(labels, x)
        yield from families.values()


class HttpMetrics:
    """Request counts and durations per route template (bounded: the app's routes)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = PromCounter(
            "swabline_http_requests",
            "HTTP requests by method, route and status class",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "swabline_http_request_duration_seconds",
            "HTTP request duration by route",
            ["route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    def install(self, app: FastAPI) -> None:
        @app.middleware("http")
        async def _measure(request: Request, call_next: Callable[[Request], object]) -> Response:
            started = time.perf_counter()
            response: Response = await call_next(request)  # type: ignore[misc]
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.requests.labels(request.method, template, f"{response.status_code // 100}xx").inc()
            self.duration.labels(template).observe(time.perf_counter() - started)
            return response
