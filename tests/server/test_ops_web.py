"""The ops pages and API in-process: fleet, station page with charts, alerts, commands,
thresholds and schedules; scoped by role and organisation, audited, Vietnamese first."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import Alert, AuditEntry, StationCommand
from server.ops.monitor import AlertNotifier, OpsMonitor
from tests.server.conftest import PASSWORD, Env
from tests.server.ops_helpers import heartbeat, ingest, status

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def session(env: Env, username: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with env.client() as c:
        r = await c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        yield c, r.json()["csrf_token"]


def live_fleet(env: Env, *, hot: bool = False) -> None:
    """st-1 online (hot, if asked) with a minute of history; st-2 offline for an hour."""
    now = datetime.now(UTC)
    ingest(env.engine, status("st-1", "online", 1), status("st-2", "online", 1))
    for i in range(3):
        at = now - timedelta(minutes=2 - i)
        ingest(
            env.engine,
            heartbeat("st-1", at, outbox_depth=4 + i, scans_today=10 * i, mqtt_reconnects=i,
                      cpu_temp_c=85.0 if hot else 55.0),
        )  # fmt: skip
    ingest(env.engine, heartbeat("st-2", now - timedelta(hours=1)))
    ingest(env.engine, status("st-2", "offline", 1))
    monitor = OpsMonitor(engine=env.engine, config=env.config, notify=AlertNotifier(enabled=False))
    monitor.evaluate()


async def test_the_fleet_api_shows_status_health_and_place_within_the_callers_scope(
    env: Env,
) -> None:
    live_fleet(env)
    async with env.client("ops") as ops:
        data = (await ops.get("/api/ops/fleet")).json()
    by_id = {s["station_id"]: s for s in data["stations"]}
    assert by_id["st-1"]["status"] == "online" and by_id["st-1"]["outbox_depth"] == 6
    assert (
        by_id["st-1"]["district"] == "Ba Đình" and by_id["st-1"]["facility"] == "Trạm Y tế Ba Đình"
    )
    assert by_id["st-2"]["status"] == "offline"
    assert data["summary"] == {"online": 1, "offline": 1}
    async with env.client("staff-bd") as staff:  # sees their facility's station only
        ids = [s["station_id"] for s in (await staff.get("/api/ops/fleet")).json()["stations"]]
        assert ids == ["st-1"]
        assert (await staff.get("/api/ops/stations/st-2")).status_code == 404
    async with env.client("lab") as lab:  # no station.read
        assert (await lab.get("/api/ops/fleet")).status_code == 403


async def test_fleet_page_groups_by_district_and_facility_in_vietnamese_then_english(
    env: Env,
) -> None:
    live_fleet(env)
    async with session(env, "ops") as (c, _):
        page = await c.get("/ops")
        assert page.status_code == 200
        html = page.text
        assert "Ba Đình › Trạm Y tế Ba Đình" in html and "Cầu Giấy › Trạm Y tế Cầu Giấy" in html
        assert 'id="st-st-1" data-status="online"' in html
        assert "Trực tuyến" in html and "Ngoại tuyến" in html
        assert "<script src" not in html and "http" not in re.sub(
            r'xmlns="[^"]+"', "", html.split("<script", 1)[1]
        )
        english = (await c.get("/ops?lang=en")).text
        assert "Online" in english and "Offline" in english and "Trực tuyến" not in english


async def test_station_page_has_history_charts_health_and_alerts(env: Env) -> None:
    live_fleet(env, hot=True)
    async with session(env, "ops") as (c, _):
        html = (await c.get("/ops/stations/st-1")).text
        history = (await c.get("/api/ops/stations/st-1/history")).json()
    assert html.count("<svg") == 4
    for cls in ("backlog", "scans", "temperature", "reconnects"):
        assert f'class="chart {cls}"' in html
    assert "<path d=" in html  # backlog and temperature lines drawn
    assert "Quá nhiệt" in html  # the overheating alert, in Vietnamese
    assert [p[1] for p in history["backlog"]["points"]] == [4.0, 5.0, 6.0]
    assert sum(p[1] for p in history["scans_per_hour"]["points"]) == 20.0


async def test_alerts_are_acknowledged_and_resolved_through_the_api_with_an_audit_trail(
    env: Env,
) -> None:
    live_fleet(env, hot=True)
    async with env.client("ops") as ops:
        live = (await ops.get("/api/ops/alerts")).json()
        assert {(a["station_id"], a["kind"]) for a in live} == {
            ("st-1", "overheating"),
            ("st-2", "offline"),  # no operating hours set: offline counts at any time
        }
        [alert] = (await ops.get("/api/ops/alerts?station_id=st-1")).json()
        assert alert["kind"] == "overheating" and alert["state"] == "open"
        assert "85" in alert["text"]["vi"] and "overheating" in alert["text"]["en"]
        r = await ops.post(f"/api/ops/alerts/{alert['id']}/acknowledge", json={"note": "đã gọi"})
        assert r.status_code == 200 and r.json()["state"] == "acknowledged"
        again = await ops.post(f"/api/ops/alerts/{alert['id']}/acknowledge")
        assert again.status_code == 409
        r = await ops.post(f"/api/ops/alerts/{alert['id']}/resolve")
        assert r.json()["state"] == "resolved" and r.json()["automatic"] is False
    async with env.client("tech-cg") as tech:  # may look, not act
        r = await tech.post(f"/api/ops/alerts/{alert['id']}/resolve")
        assert r.status_code == 403
    with Session(env.engine) as s:
        actions = list(
            s.scalars(select(AuditEntry.action).where(AuditEntry.object_type == "alert"))
        )
    assert actions == ["alert.acknowledge", "alert.resolve"]


async def test_alert_form_on_the_page_needs_the_csrf_token(env: Env) -> None:
    live_fleet(env, hot=True)
    with Session(env.engine) as s:
        alert_id = s.scalars(select(Alert.id).where(Alert.kind == "overheating")).one()
    async with session(env, "ops") as (c, csrf):
        page = (await c.get("/ops/alerts")).text
        assert f'id="alert-{alert_id}"' in page
        refused = await c.post(f"/ops/alerts/{alert_id}/acknowledge", data={"csrf_token": "x"})
        assert refused.status_code == 403
        ok = await c.post(f"/ops/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf})
        assert ok.status_code == 303
    with Session(env.engine) as s:
        assert s.get(Alert, alert_id).state == "acknowledged"  # type: ignore[union-attr]


async def test_commands_from_the_api_and_the_page_are_queued_and_audited(env: Env) -> None:
    live_fleet(env)
    async with env.client("ops") as ops:
        r = await ops.post("/api/ops/stations/st-1/commands", json={"name": "identify"})
        assert r.status_code == 201, r.text
        cmd = r.json()
        assert cmd["state"] == "queued" and cmd["args"] == {"duration_s": 30.0}
        bad = await ops.post(
            "/api/ops/stations/st-1/commands", json={"name": "set_setting", "args": {}}
        )
        assert bad.status_code == 400 and "at least one" in bad.json()["detail"]
        assert (await ops.get(f"/api/ops/commands/{cmd['command_id']}")).json()[
            "name"
        ] == "identify"
    async with env.client("staff-bd") as staff:
        r = await staff.post("/api/ops/stations/st-1/commands", json={"name": "restart"})
        assert r.status_code == 403
    async with session(env, "ops") as (c, csrf):
        r = await c.post(
            "/ops/stations/st-1/commands",
            data={"csrf_token": csrf, "name": "set_setting", "pool_size": "5"},
        )
        assert r.status_code == 303
        page = (await c.get("/ops/stations/st-1")).text
        assert "Đổi cài đặt" in page and "Nhận diện" in page
    with Session(env.engine) as s:
        rows = s.scalars(select(StationCommand).order_by(StationCommand.created_at)).all()
        assert [(r.name, r.args, r.actor) for r in rows] == [
            ("identify", {"duration_s": 30.0}, "ops"),
            ("set_setting", {"pool_size": 5}, "ops"),
        ]
        audited = s.scalars(select(AuditEntry.action).where(AuditEntry.action == "command.create"))
        assert len(list(audited)) == 2


async def test_thresholds_and_schedules_are_changed_centrally(env: Env) -> None:
    live_fleet(env)
    async with env.client("admin") as admin:
        r = await admin.put("/api/ops/thresholds", json={"cpu_temp_max_c": 50})
        assert r.status_code == 200 and r.json()["cpu_temp_max_c"] == 50
        got = (await admin.get("/api/ops/thresholds")).json()
        assert (
            got["overrides"] == {"cpu_temp_max_c": 50} and got["defaults"]["cpu_temp_max_c"] == 80
        )
        bad = await admin.put("/api/ops/thresholds", json={"cpu_temp_max_c": 500})
        assert bad.status_code == 400
        facility = env.org["HN-BD-TYT"]
        hours = {"windows": [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "17:00"}]}
        r = await admin.put(f"/api/ops/schedules/{facility}", json=hours)
        assert r.status_code == 200 and r.json()["timezone"] == "Asia/Ho_Chi_Minh"
        assert (await admin.get(f"/api/ops/schedules/{facility}")).json()["windows"][0][
            "start"
        ] == "07:00"
    async with env.client("mgr-bd") as mgr:  # a facility manager sets their own facility's hours
        r = await mgr.put(f"/api/ops/schedules/{env.org['HN-CG-TYT']}", json=hours)
        assert r.status_code == 404
        r = await mgr.delete(f"/api/ops/schedules/{facility}")
        assert r.status_code == 204
        assert (await mgr.get(f"/api/ops/schedules/{facility}")).json() is None
        assert (await mgr.put(f"/api/ops/schedules/{facility}", json=hours)).status_code == 200
        r = await mgr.put("/api/ops/thresholds", json={"cpu_temp_max_c": 60})
        assert r.status_code == 403
    async with session(env, "admin") as (c, _):
        page = (await c.get("/ops/settings")).text
        assert 'name="cpu_temp_max_c" value="50' in page and "07:00" in page


async def test_metrics_cover_the_fleet_and_need_a_token(env: Env) -> None:
    live_fleet(env)
    async with env.client() as anon:
        assert (await anon.get("/metrics")).status_code == 401
    async with env.client("ops") as ops:
        await ops.get("/api/ops/fleet")
        text = (await ops.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    stations = {s.labels["status"]: s.value for s in families["swabline_fleet_stations"].samples}
    assert stations["online"] == 1 and stations["offline"] == 1
    up = {s.labels["station"]: s.value for s in families["swabline_station_up"].samples}
    assert up == {"st-1": 1.0, "st-2": 0.0}
    routes = {s.labels["route"] for s in families["swabline_http_requests"].samples}
    assert "/api/ops/fleet" in routes


async def test_ids_out_of_range_and_nul_in_a_command_id_are_refused_not_server_errors(
    env: Env,
) -> None:
    """Found by the schemathesis run: a facility id past 32 bits reached the database (500 on
    both engines), as could an alert id past 64 bits and a NUL in a command id (PostgreSQL)."""
    async with env.client("admin") as admin:
        for method, path in (
            ("GET", f"/api/ops/schedules/{2**31}"),
            ("DELETE", f"/api/ops/schedules/{2**40}"),
            ("POST", f"/api/ops/alerts/{2**63}/acknowledge"),
            ("POST", f"/api/ops/alerts/{2**64}/resolve"),
            ("GET", "/api/ops/commands/a%00b"),
        ):
            r = await admin.request(method, path)
            assert r.status_code == 422, (method, path, r.text)
        assert (await admin.get(f"/api/ops/schedules/{2**31 - 1}")).status_code == 404
