"""/metrics for the fleet: the number of series stays bounded however many stations there are,
and the stations with problems are the ones that get their own series."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from server.config import ServerConfig
from server.db import make_engine, migrate
from server.models import Organisation, StationRow
from server.ops.metrics import FleetCollector
from tests.server.ops_helpers import heartbeat, ingest, org_tree, status

STATIONS, FACILITIES = 300, 25


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    tree = org_tree(engine)
    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():
        district = s.get(Organisation, tree.district)
        assert district is not None
        facilities = []
        for i in range(FACILITIES):
            f = Organisation(
                parent_id=district.id,
                kind="facility",
                facility_kind="sampling",
                code=f"F{i:02d}",
                name=f"Cơ sở {i}",
                path="",
                active=True,
                created_at=now,
                updated_at=now,
            )
            s.add(f)
            s.flush()
            f.path = f"{district.path}{f.id}/"
            facilities.append(f.id)
        for n in range(STATIONS):
            s.add(
                StationRow(
                    station_id=f"st-{n:04d}",
                    state="unknown",
                    bd_seq=-1,
                    max_seq=0,
                    record_count=0,
                    active=True,
                    # Facility sizes differ so "the largest" is well defined: F00 has the most.
                    facility_id=facilities[
                        min(int((n / STATIONS) ** 2 * FACILITIES), FACILITIES - 1)
                    ],
                )
            )
    messages = []
    for n in range(STATIONS):
        sid = f"st-{n:04d}"
        messages += [status(sid, "online", 1), heartbeat(sid, now, outbox_depth=n, scans_today=2)]
    ingest(engine, *messages)
    with Session(engine) as s, s.begin():  # three stations went silent long ago
        s.execute(
            update(StationRow)
            .where(StationRow.station_id.in_(["st-0290", "st-0291", "st-0292"]))
            .values(state="offline", last_heartbeat_at=now - timedelta(hours=1))
        )
    yield engine
    engine.dispose()


def scrape(
    engine: Engine, max_stations: int, max_facilities: int
) -> dict[str, list[dict[str, str]]]:
    config = ServerConfig.model_validate(
        {"ops": {"metrics_max_stations": max_stations, "metrics_max_facilities": max_facilities}}
    )
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, config))
    series: dict[str, list[dict[str, str]]] = defaultdict(list)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            series[sample.name].append(dict(sample.labels) | {"value": str(sample.value)})
    return series


def test_series_are_bounded_by_the_configuration_not_the_fleet(fleet: Engine) -> None:
    small = scrape(fleet, max_stations=20, max_facilities=5)
    total_small = sum(len(v) for v in small.values())
    up = small["swabline_station_up"]
    assert len(up) == 20
    labelled = {s["station"] for s in up}
    assert {"st-0290", "st-0291", "st-0292"} <= labelled  # the offline ones are never left out
    facilities = {s["facility"] for s in small["swabline_facility_outbox_depth"]}
    assert len(facilities) == 6 and "other" in facilities and "F00" in facilities
    # Nothing is lost by aggregating: the per-facility sums cover every station.
    counted = sum(float(s["value"]) for s in small["swabline_facility_stations"])
    assert counted == STATIONS
    depth = sum(float(s["value"]) for s in small["swabline_facility_outbox_depth"])
    assert depth == sum(range(STATIONS))
    by_status = {s["status"]: float(s["value"]) for s in small["swabline_fleet_stations"]}
    assert by_status["offline"] == 3 and by_status["online"] == STATIONS - 3
    # Ten times the allowance for stations only adds the per-station series, nothing else.
    large = scrape(fleet, max_stations=200, max_facilities=5)
    per_station = len([k for k in large if k.startswith("swabline_station_")])
    assert sum(len(v) for v in large.values()) - total_small <= 180 * per_station


def test_per_station_values(fleet: Engine) -> None:
    series = scrape(fleet, max_stations=STATIONS, max_facilities=100)
    depth = {s["station"]: float(s["value"]) for s in series["swabline_station_outbox_depth"]}
    assert depth["st-0007"] == 7
    age = {
        s["station"]: float(s["value"])
        for s in series["swabline_station_last_heartbeat_age_seconds"]
    }
    assert age["st-0290"] >= 3600
    assert float(series["swabline_fleet_stations_labelled"][0]["value"]) == STATIONS
