"""Who may see and change what: sessions, tokens, CSRF, roles, organisation scope, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.models import AuditEntry, AuthToken, Tube
from tests.server.conftest import PASSWORD, Env

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def login(env: Env, username: str) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.Response]]:
    """A client holding a web session of ``username``, and the login response."""
    async with env.client() as c:
        r = await c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        yield c, r


async def test_the_api_needs_a_login_but_health_and_the_openapi_document_do_not(env: Env) -> None:
    async with env.client() as anon:
        for path in ("/api/stations", "/api/tubes", "/api/persons", "/api/users", "/metrics"):
            r = await anon.get(path)
            assert r.status_code == 401, path
            assert r.json()["code"] == "not_authenticated"
        assert (await anon.get("/healthz")).json() == {"status": "ok"}
        doc = (await anon.get("/openapi.json")).json()
        assert {"token", "session"} <= set(doc["components"]["securitySchemes"])
        page = await anon.get("/")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")


async def test_a_session_cookie_is_httponly_strict_and_unsafe_requests_need_the_csrf_token(
    env: Env,
) -> None:
    async with login(env, "admin") as (c, r):
        set_cookie = r.headers["set-cookie"].lower()
        assert "swabline_session=" in set_cookie
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        csrf = r.json()["csrf_token"]
        me = (await c.get("/api/auth/me")).json()
        assert me["username"] == "admin" and "org.write" in me["permissions"]
        body = {"display_name": "Chị Hoa"}
        refused = await c.patch("/api/auth/me", json=body)
        assert refused.status_code == 403
        wrong = await c.patch("/api/auth/me", json=body, headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        ok = await c.patch("/api/auth/me", json=body, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["display_name"] == "Chị Hoa"
        out = await c.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204
        c.cookies.set("swabline_session", r.cookies["swabline_session"])  # replay it
        assert (await c.get("/api/auth/me")).status_code == 401


async def test_a_tampered_expired_idle_or_revoked_credential_is_refused(env: Env) -> None:
    async with login(env, "staff-bd") as (c, _):
        secret = c.cookies["swabline_session"]
        assert (await c.get("/api/auth/me")).status_code == 200
        tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        async with env.client(cookies={"swabline_session": tampered}) as t:
            assert (await t.get("/api/auth/me")).status_code == 401
        with Session(env.engine) as db:  # an idle session
            db.execute(
                update(AuthToken)
                .where(AuthToken.kind == "session")
                .values(last_used_at=datetime.now(UTC) - timedelta(hours=3))
            )
            db.commit()
        r = await c.get("/api/auth/me")
        assert r.status_code == 401 and "idle" in r.json()["detail"]
    async with login(env, "staff-bd") as (c, _):
        with Session(env.engine) as db:  # past its absolute lifetime
            db.execute(
                update(AuthToken)
                .where(AuthToken.kind == "session")
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            db.commit()
        r = await c.get("/api/auth/me")
        assert r.status_code == 401 and "expired" in r.json()["detail"]
    async with env.client("lab") as lab:
        assert (await lab.get("/api/auth/me")).status_code == 200
        made = (await lab.post("/api/auth/tokens", json={"name": "script"})).json()
        async with env.client(headers={"Authorization": f"Bearer {made['token']}"}) as script:
            assert (await script.get("/api/auth/me")).status_code == 200
            assert (await lab.delete(f"/api/auth/tokens/{made['id']}")).status_code == 204
            assert (await script.get("/api/auth/me")).status_code == 401
    async with env.client(headers={"Authorization": "Bearer swl_not-a-real-token"}) as forged:
        assert (await forged.get("/api/stations")).status_code == 401


async def test_login_is_rate_limited_per_username_and_address(env: Env) -> None:
    async with env.client() as c:
        for _ in range(env.config.auth.login_max_failures):
            r = await c.post("/api/auth/login", json={"username": "ops", "password": "wrong!"})
            assert r.status_code == 401
        r = await c.post("/api/auth/login", json={"username": "ops", "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        # Another user from the same address is still let in, below the address limit.
        r = await c.post("/api/auth/login", json={"username": "lab", "password": PASSWORD})
        assert r.status_code == 200
        for i in range(env.config.auth.login_max_failures_per_addr):
            await c.post("/api/auth/login", json={"username": f"nobody{i}", "password": "x"})
        r = await c.post("/api/auth/login", json={"username": "tech-cg", "password": PASSWORD})
        assert r.status_code == 429
    # An unknown user and a wrong password get the same answer.
    async with env.client(transport=httpx.ASGITransport(app=env.app, client=("10.0.0.9", 1))) as o:
        a = await o.post("/api/auth/login", json={"username": "nobody", "password": "x"})
        b = await o.post("/api/auth/login", json={"username": "admin", "password": "x"})
        assert a.status_code == b.status_code == 401 and a.json() == b.json()


async def test_a_user_sees_only_their_facilitys_data(env: Env) -> None:
    async with env.client("staff-bd") as bd, env.client("staff-cg") as cg:
        tubes = (await bd.get("/api/tubes")).json()
        assert [t["code"] for t in tubes["items"]] == ["T-BD-1"] and tubes["total"] == 1
        assert (await bd.get("/api/tubes/T-CG-1")).status_code == 404
        assert (await cg.get("/api/tubes/T-CG-1")).status_code == 200
        detail = (await bd.get("/api/tubes/T-BD-1")).json()
        assert [m["person_key"] for m in detail["members"]] == ["079303001234", "001090012345"]
        assert [e["kind"] for e in detail["events"]] == ["collected"]
        persons = (await bd.get("/api/persons")).json()["items"]
        assert sorted(p["key"] for p in persons) == ["001090012345", "079303001234"]
        other = (await cg.get("/api/persons")).json()["items"]
        assert [p["key"] for p in other] == ["001090099999"]
        assert (await bd.get(f"/api/persons/{other[0]['id']}")).status_code == 404
        assert [s["station_id"] for s in (await bd.get("/api/stations")).json()] == ["st-1"]
        assert {r["station_id"] for r in (await bd.get("/api/records")).json()} == {"st-1"}
        assert (await bd.get("/api/stations/st-2")).status_code == 404
        pools = (await bd.get("/api/pools", params={"tube": "T-CG-1"})).json()
        assert pools["total"] == 0
        samples = (await cg.get("/api/samples")).json()["items"]
        assert [s["tube_code"] for s in samples] == ["T-CG-1"]
    async with env.client("admin") as admin:
        tubes = (await admin.get("/api/tubes")).json()["items"]
        assert sorted(t["code"] for t in tubes) == ["T-BD-1", "T-CG-1"]


async def test_a_lab_sees_the_tubes_it_received(env: Env) -> None:
    from server.models import SampleStage
    from server.samples import record_event

    async with env.client("lab") as lab:
        assert (await lab.get("/api/tubes")).json()["total"] == 0
        with Session(env.engine) as db:
            tube = db.scalars(select(Tube).where(Tube.code == "T-CG-1")).one()
            record_event(
                db,
                tube_id=tube.id,
                kind=SampleStage.RECEIVED_AT_LAB,
                at=datetime.now(UTC),
                facility_id=env.org["HN-LAB"],
            )
            db.commit()
        tubes = (await lab.get("/api/tubes")).json()["items"]
        assert [(t["code"], t["status"]) for t in tubes] == [("T-CG-1", "received_at_lab")]


async def test_a_user_cannot_change_another_facilitys_data(env: Env) -> None:
    async with env.client("mgr-bd") as mgr, env.client("tech-cg") as tech:
        r = await mgr.patch("/api/stations/st-2", json={"name": "mine now"})
        assert r.status_code == 404
        r = await mgr.post(
            "/api/stations", json={"station_id": "st-9", "facility_id": env.org["HN-CG-TYT"]}
        )
        assert r.status_code == 404
        r = await tech.patch("/api/stations/st-2", json={"name": "Bàn 2"})
        assert r.status_code == 200 and r.json()["name"] == "Bàn 2"
        r = await tech.patch("/api/stations/st-2", json={"facility_id": env.org["HN-BD-TYT"]})
        assert r.status_code == 404  # moving it into a facility the technician does not have
        new_user = {
            "username": "nv-cg",
            "display_name": "NV",
            "password": "a long password",
            "roles": [{"role": "sampling_staff", "organisation_id": env.org["HN-CG-TYT"]}],
        }
        assert (await mgr.post("/api/users", json=new_user)).status_code == 404
        r = await mgr.patch(f"/api/users/{env.user_id['staff-cg']}", json={"active": False})
        assert r.status_code == 404
        boss = {
            **new_user,
            "roles": [{"role": "provincial_admin", "organisation_id": env.org["HN-BD-TYT"]}],
        }
        assert (await mgr.post("/api/users", json=boss)).status_code == 403
        own = {
            **new_user,
            "username": "nv-bd",
            "roles": [{"role": "sampling_staff", "organisation_id": env.org["HN-BD-TYT"]}],
        }
        assert (await mgr.post("/api/users", json=own)).status_code == 201
        r = await mgr.patch(f"/api/users/{env.user_id['admin']}", json={"display_name": "x"})
        assert r.status_code == 404


async def test_a_missing_role_is_refused(env: Env) -> None:
    async with env.client("ops") as ops, env.client("staff-bd") as staff:
        assert (await ops.get("/api/stations")).status_code == 200
        for path in ("/api/persons", "/api/tubes", "/api/records", "/api/pools", "/api/samples"):
            r = await ops.get(path)
            assert r.status_code == 403 and r.json()["code"] == "forbidden", path
        assert (await staff.get("/api/users")).status_code == 403
        assert (await staff.get("/api/audit")).status_code == 403
        org = {"code": "X1", "name": "X", "kind": "district", "parent_id": env.org["HN"]}
        assert (await staff.post("/api/organisations", json=org)).status_code == 403
        assert (await staff.patch("/api/stations/st-1", json={"name": "x"})).status_code == 403
        metrics = await staff.get("/metrics")
        assert metrics.status_code == 200  # station.read: sampling staff see the fleet


async def test_every_write_is_audited_with_before_and_after(
    env: Env, admin: httpx.AsyncClient
) -> None:
    r = await admin.post(
        "/api/organisations",
        json={
            "code": "HN-BD-PK",
            "name": "Phòng khám",
            "kind": "facility",
            "parent_id": env.org["HN-BD"],
            "facility_kind": "both",
        },
    )
    assert r.status_code == 201
    fid = r.json()["id"]
    assert r.json()["path"] == f"/{env.org['HN']}/{env.org['HN-BD']}/{fid}/"
    r = await admin.patch(f"/api/organisations/{fid}", json={"name": "Phòng khám đa khoa"})
    assert r.status_code == 200
    r = await admin.patch(f"/api/users/{env.user_id['staff-cg']}", json={"active": False})
    assert r.status_code == 200
    async with env.client("staff-cg") as gone:
        assert (await gone.get("/api/auth/me")).status_code == 401
    entries = (await admin.get("/api/audit")).json()["items"]
    by_action = {(e["action"], e["object_id"]): e for e in entries}
    created = by_action[("organisation.create", str(fid))]
    assert created["before"] is None and created["after"]["name"] == "Phòng khám"
    assert created["actor"] == "admin" and created["user_id"] == env.user_id["admin"]
    renamed = by_action[("organisation.update", str(fid))]
    assert (renamed["before"]["name"], renamed["after"]["name"]) == (
        "Phòng khám",
        "Phòng khám đa khoa",
    )
    deactivated = by_action[("user.update", str(env.user_id["staff-cg"]))]
    assert (deactivated["before"]["active"], deactivated["after"]["active"]) == (True, False)
    assert "password_hash" not in deactivated["after"]
    async with env.client("mgr-bd") as mgr:  # the BD manager sees BD's entries only
        seen = (await mgr.get("/api/audit")).json()["items"]
        assert seen and all(e["organisation_id"] == env.org["HN-BD-TYT"] for e in seen)
    with Session(env.engine) as db:
        assert db.scalar(select(AuditEntry.id).where(AuditEntry.action == "user.create"))


async def test_organisations_keep_the_tree_rules(env: Env, admin: httpx.AsyncClient) -> None:
    bad = await admin.post(
        "/api/organisations",
        json={
            "code": "F1",
            "name": "F",
            "kind": "facility",
            "parent_id": env.org["HN-BD-TYT"],
            "facility_kind": "lab",
        },
    )
    assert bad.status_code == 400
    nokind = await admin.post(
        "/api/organisations",
        json={"code": "F2", "name": "F", "kind": "facility", "parent_id": env.org["HN-BD"]},
    )
    assert nokind.status_code == 400
    dup = await admin.post(
        "/api/organisations",
        json={"code": "HN-BD", "name": "again", "kind": "district", "parent_id": env.org["HN"]},
    )
    assert dup.status_code == 409
    province = await admin.post(
        "/api/organisations", json={"code": "HP", "name": "Hải Phòng", "kind": "province"}
    )
    assert province.status_code == 403
    busy = await admin.patch(f"/api/organisations/{env.org['HN-BD']}", json={"active": False})
    assert busy.status_code == 409
    moved = await admin.patch(
        f"/api/organisations/{env.org['HN-BD-TYT']}", json={"parent_id": env.org["HN-CG"]}
    )
    assert moved.json()["path"] == f"/{env.org['HN']}/{env.org['HN-CG']}/{env.org['HN-BD-TYT']}/"
    async with env.client("staff-bd") as staff:  # still sees its own data after the move
        assert (await staff.get("/api/tubes")).json()["total"] == 1
    off = await admin.patch(f"/api/organisations/{env.org['HN-BD-TYT']}", json={"active": False})
    assert off.status_code == 200 and off.json()["active"] is False
    async with env.client("staff-bd") as staff:  # a deactivated node grants nothing
        assert (await staff.get("/api/tubes")).status_code == 403
    listed = (await admin.get("/api/organisations", params={"kind": "district"})).json()
    assert [o["code"] for o in listed["items"]] == ["HN-BD", "HN-CG"]
    found = (await admin.get("/api/organisations", params={"q": "hn-c"})).json()
    assert [o["code"] for o in found["items"]] == ["HN-CG", "HN-CG-TYT"]
    # % and _ are searched for as themselves, not as wildcards
    for q in ("%", "_", "HN_BD"):
        none = (await admin.get("/api/organisations", params={"q": q})).json()
        assert none["items"] == [], q


async def test_stations_are_registered_claimed_and_moved(
    env: Env, admin: httpx.AsyncClient
) -> None:
    from server.ingest import classify, store_resilient
    from tests.server.factories import message, pool_session

    store_resilient(
        env.engine,
        classify([message(r) for r in pool_session("st-7", "T-NEW-1", ["001090011111"])]),
    )
    async with env.client("tech-cg") as tech:
        assert (
            await tech.get("/api/stations/st-7")
        ).status_code == 404  # unassigned: province only
        r = await tech.post(
            "/api/stations",
            json={"station_id": "st-7", "name": "Bàn 7", "facility_id": env.org["HN-CG-TYT"]},
        )
        assert r.status_code == 201 and r.json()["records"] == 3
        r = await tech.post(
            "/api/stations", json={"station_id": "st-7", "facility_id": env.org["HN-CG-TYT"]}
        )
        assert r.status_code == 409
        off = await tech.patch("/api/stations/st-7", json={"active": False})
        assert off.json()["active"] is False
    async with env.client("staff-cg") as staff:  # the station's earlier tubes came along
        codes = [t["code"] for t in (await staff.get("/api/tubes")).json()["items"]]
        assert "T-NEW-1" in codes


async def test_search_is_paginated(env: Env, admin: httpx.AsyncClient) -> None:
    p1 = (await admin.get("/api/persons", params={"page_size": 2})).json()
    p2 = (await admin.get("/api/persons", params={"page_size": 2, "page": 2})).json()
    assert p1["total"] == p2["total"] == 3
    assert len(p1["items"]) == 2 and len(p2["items"]) == 1
    assert {p["id"] for p in p1["items"]}.isdisjoint({p["id"] for p in p2["items"]})
    by_name = (await admin.get("/api/persons", params={"q": "079303"})).json()
    assert [p["key"] for p in by_name["items"]] == ["079303001234"]
    assert (await admin.get("/api/persons", params={"page_size": 500})).status_code == 422
