"""docs/prometheus-alerts.yml and docs/grafana-dashboard.json: well-formed, and every metric
they use is one the server really exports."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.config import ServerConfig
from server.db import make_engine, migrate
from server.metrics import IngestCollector, SharedCounters
from server.ops.metrics import FleetCollector, HttpMetrics
from tests.server.ops_helpers import add_station, heartbeat, ingest, org_tree, status

DOCS = Path(__file__).resolve().parents[1] / "docs"
RULES = yaml.safe_load((DOCS / "prometheus-alerts.yml").read_text())
DASHBOARD = json.loads((DOCS / "grafana-dashboard.json").read_text())
_METRIC = re.compile(r"\bswabline_[a-z0-9_]+")
_SUFFIX = re.compile(r"_(total|bucket|sum|count|created)$")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Names of every metric family /metrics exposes (with a station reporting everything)."""
    from datetime import UTC, datetime

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('m') / 'm.db'}")
    migrate(engine)
    tree = org_tree(engine)
    add_station(engine, "st-1", tree.facility)
    now = datetime.now(UTC)
    ingest(
        engine,
        status("st-1", "online", 1),
        heartbeat(
            "st-1",
            now,
            oldest_pending_age_s=3.0,
            scans_today=4,
            load_avg=0.3,
            mem_available_mb=900.0,
            wifi_signal_dbm=-60.0,
            mqtt_reconnects=1,
            under_voltage=False,
            throttled=False,
        ),
    )
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, ServerConfig()))
    registry.register(IngestCollector(SharedCounters(multiprocessing.get_context("spawn"), 1)))
    HttpMetrics(registry)
    names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    engine.dispose()
    return names


def used(expr: str) -> set[str]:
    return {_SUFFIX.sub("", m) for m in _METRIC.findall(expr)}


def test_alert_rules_have_the_structure_prometheus_expects(exported: set[str]) -> None:
    assert set(RULES) == {"groups"}
    names: set[str] = set()
    for group in RULES["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert re.fullmatch(r"Swabline[A-Z][A-Za-z]+", rule["alert"])
            assert rule["alert"] not in names
            names.add(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].count("(") == rule["expr"].count(
                ")"
            )
            if "for" in rule:
                assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            unknown = used(rule["expr"]) - exported
            assert not unknown, (
                f"{rule['alert']} uses metrics the server does not export: {unknown}"
            )


def test_grafana_dashboard_queries_only_exported_metrics(exported: set[str]) -> None:
    assert DASHBOARD["uid"] == "swabline-fleet" and DASHBOARD["panels"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            unknown = used(target["expr"]) - exported
            assert not unknown, f"panel {panel['title']!r} uses unknown metrics: {unknown}"
    assert "swabline_station_up" in exported and "swabline_fleet_stations" in exported
