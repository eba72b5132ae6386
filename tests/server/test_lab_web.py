"""The lab, public and report pages in-process (httpx.ASGITransport): reception by a scanner
field, result entry, CSV import, recall lists, result lookup, slip verification, declaration,
reports and downloads; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.codes import CodeRules, PersonCode
from agent.codes import classify as classify_code
from server.healthqr import QID_RE, parse_health_qr
from server.ingest import classify, store_resilient
from server.models import Declaration, Person, Result, SampleEvent
from server.web.i18n import TEXTS
from tests.server.conftest import PASSWORD, Env
from tests.server.factories import message, record

pytestmark = pytest.mark.anyio
JSON = {"Accept": "application/json"}


@asynccontextmanager
async def session(env: Env, username: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client logged in through the web session, and its CSRF token for forms."""
    async with env.client() as c:
        r = await c.post("/api/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        yield c, r.json()["csrf_token"]


def sample(
    env: Env, station: str, tube: str, people: list[tuple[str, str, str]], seq0: int
) -> None:
    """A pool with persons that carry a date of birth (CCCD, name, YYYY-MM-DD)."""
    sample_persons(
        env,
        station,
        tube,
        [{"key_type": "cccd", "key": k, "name": n, "birth_date": d} for k, n, d in people],
        seq0,
    )


def health_qr_person(qid: str, document: str, birth_date: str, name: str) -> dict[str, Any]:
    """A person as a station reads a unified health QR (agent.codes): keyed by the QID."""
    return {
        "key_type": "qid",
        "key": qid,
        "name": name,
        "birth_date": birth_date,
        "document_number": document,
    }


def sample_persons(
    env: Env, station: str, tube: str, people: list[dict[str, Any]], seq0: int
) -> None:
    """A pool of these persons (``protocol.events.Person`` fields), through ingest."""
    recs = [
        record(
            station,
            seq0,
            "tube_opened",
            {"tube": tube, "mode": "pool", "pool_size": 10, "test_kind": "rt_pcr"},
            code=tube,
        )
    ]
    for i, person in enumerate(people, 1):
        recs.append(
            record(
                station, seq0 + i, "person_added", {"tube": tube, "person": person, "position": i}
            )
        )
    recs.append(
        record(
            station,
            seq0 + len(people) + 1,
            "pool_closed",
            {"tube": tube, "persons": len(people), "reason": "card"},
        )
    )
    store_resilient(env.engine, classify([message(r) for r in recs]))


async def receive(c: httpx.AsyncClient, csrf: str, env: Env, box: str, *codes: str) -> list[Any]:
    r = await c.post(
        "/lab/batches",
        data={
            "code": box,
            "action": "receive",
            "facility_id": env.org["HN-LAB"],
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    out = []
    for code in codes:
        s = await c.post(f"{url}/scan", data={"code": code, "csrf_token": csrf}, headers=JSON)
        out.append(s.json())
    return out


async def test_reception_with_a_scanner_field_flags_unknown_tubes(env: Env) -> None:
    async with session(env, "lab") as (c, csrf):
        page = await c.get("/lab")
        assert page.status_code == 200 and 'id="receive-form"' in page.text
        outcomes = await receive(c, csrf, env, "THUNG-01", "T-BD-1", "T-BD-1", "T-NEW-9")
        assert [o["outcome"] for o in outcomes] == ["received", "already_received", "unknown_tube"]
        assert [o["ok"] for o in outcomes] == [True, False, False]
        batch = (await c.get("/lab")).text
        href = re.search(r'href="(/lab/batches/\d+)">THUNG-01', batch)
        assert href is not None
        view = await c.get(href.group(1))
        assert view.status_code == 200
        assert 'data-flag="received"><td>T-BD-1' in view.text
        assert "Ống chưa có dữ liệu từ trạm lấy mẫu" in view.text
        closed = await c.post(f"{href.group(1)}/close", data={"csrf_token": csrf})
        assert closed.status_code == 303
        # A form without the session's CSRF token is refused.
        forged = await c.post(f"{href.group(1)}/scan", data={"code": "T-CG-1"})
        assert forged.status_code == 403
    async with session(env, "staff-bd") as (c, _):
        assert (await c.get("/lab")).status_code == 403  # sampling staff cannot receive


async def test_every_batch_write_is_audited_with_before_and_after(env: Env) -> None:
    """Packing, shipping, receiving and closing a box: who, when, what, before and after, for
    every write route of the lab pages (a new route without an audit fails here)."""
    from server.models import AuditEntry
    from server.web import lab_pages

    exercised: set[str] = set()

    async def post(c: httpx.AsyncClient, url: str, route: str, **data: Any) -> httpx.Response:
        exercised.add(route)
        return await c.post(url, data=data, headers=JSON)

    async with session(env, "admin") as (c, csrf):
        r = await post(
            c,
            "/lab/batches",
            "/lab/batches",
            code="THUNG-A1",
            action="pack",
            facility_id=env.org["HN-BD-TYT"],
            csrf_token=csrf,
        )
        box = r.headers["location"]
        for code in ("T-BD-1", "T-BD-1", "T-BD-2"):
            await post(c, f"{box}/scan", "/lab/batches/{batch_id}/scan", code=code, csrf_token=csrf)
        await post(
            c,
            f"{box}/ship",
            "/lab/batches/{batch_id}/ship",
            lab_id=env.org["HN-LAB"],
            csrf_token=csrf,
        )
    async with session(env, "lab") as (c, csrf):
        await post(
            c,
            "/lab/batches",
            "/lab/batches",
            code="THUNG-A1",
            action="receive",
            facility_id=env.org["HN-LAB"],
            csrf_token=csrf,
        )
        for code in ("T-BD-1", "T-CG-1", "T-CG-1"):
            await post(c, f"{box}/scan", "/lab/batches/{batch_id}/scan", code=code, csrf_token=csrf)
        await post(c, f"{box}/close", "/lab/batches/{batch_id}/close", csrf_token=csrf)
    batch_routes = {
        route.path  # type: ignore[attr-defined]
        for route in lab_pages.router.routes
        if "POST" in getattr(route, "methods", set()) and route.path.startswith("/lab/batch")  # type: ignore[attr-defined]
    }
    assert exercised == batch_routes
    batch_id = box.rsplit("/", 1)[1]
    with Session(env.engine) as db:
        entries = db.scalars(
            select(AuditEntry).where(AuditEntry.action.like("batch.%")).order_by(AuditEntry.id)
        ).all()
    # A repeated scan changes nothing and is not logged.
    assert [(e.action, e.actor, e.object_id) for e in entries] == [
        ("batch.pack", "admin", batch_id),
        ("batch.pack_tube", "admin", "T-BD-1"),
        ("batch.pack_tube", "admin", "T-BD-2"),
        ("batch.ship", "admin", batch_id),
        ("batch.receive", "lab", batch_id),
        ("batch.receive_tube", "lab", "T-BD-1"),
        ("batch.receive_tube", "lab", "T-CG-1"),
        ("batch.close", "lab", batch_id),
    ]
    by = {(e.action, e.object_id): e for e in entries}
    assert all(e.remote_addr == "127.0.0.1" and e.at is not None for e in entries)
    assert all(e.organisation_id == env.org["HN-LAB"] for e in entries[3:])
    ship = by[("batch.ship", batch_id)]
    assert ship.before is not None and ship.after is not None
    assert (ship.before["status"], ship.after["status"], ship.after["tubes"]) == (
        "packing",
        "shipped",
        2,
    )
    got = by[("batch.receive_tube", "T-BD-1")]
    assert got.before is not None and got.after is not None
    assert (got.before["status"], got.after["status"]) == ("shipped", "received_at_lab")
    assert got.before["batch_line"]["received_at"] is None
    assert got.after["batch_line"]["received_at"] is not None
    extra = by[("batch.receive_tube", "T-CG-1")]
    assert extra.before is not None and extra.after is not None
    assert extra.before["batch_line"] is None and extra.after["batch_line"]["expected"] is False
    closed = by[("batch.close", batch_id)]
    assert closed.after is not None
    assert (closed.after["status"], closed.after["missing"], closed.after["unexpected"]) == (
        "closed",
        1,
        1,
    )
    async with env.client("admin") as api:  # and the audit API shows them
        listed = (await api.get("/api/audit")).json()["items"]
    assert {e["action"] for e in listed} >= {"batch.ship", "batch.close"}


async def test_result_entry_by_scanning_and_a_correction_with_a_reason(env: Env) -> None:
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, "THUNG-02", "T-BD-1")
        tube = await c.post(
            "/lab/results/tube", data={"code": "T-BD-1", "csrf_token": csrf}, headers=JSON
        )
        assert tube.json() == {
            "ok": True,
            "tube": "T-BD-1",
            "status": "received_at_lab",
            "mode": "pool",
            "test_kind": "rt_pcr",
            "persons": 2,
            "result": None,
        }
        missing = await c.post(
            "/lab/results/tube", data={"code": "T-CG-1", "csrf_token": csrf}, headers=JSON
        )
        assert missing.status_code == 404  # not received by this lab
        form = {"tube": "T-BD-1", "value": "negative", "csrf_token": csrf}
        saved = await c.post("/lab/results", data=form, headers=JSON)
        assert (saved.json()["entry"], saved.json()["result"]) == ("saved", "negative")
        again = await c.post("/lab/results", data=form, headers=JSON)
        assert again.json()["entry"] == "unchanged"
        change = {**form, "value": "positive"}
        refused = await c.post("/lab/results", data=change, headers=JSON)
        assert refused.status_code == 400  # said in the page's language
        assert refused.json()["message"] == (
            "Ống T-BD-1 đã có kết quả âm tính: sửa kết quả cần ghi lý do."
        )
        fixed = await c.post(
            "/lab/results", data={**change, "reason": "đọc nhầm giếng"}, headers=JSON
        )
        assert fixed.json()["entry"] == "corrected"
        page = await c.get("/lab/tubes/T-BD-1")
        assert "đọc nhầm giếng" in page.text and "đã được sửa" in page.text
        recalls = await c.get("/lab/recalls")
        assert "T-BD-1" in recalls.text
        csv_file = await c.get("/lab/recalls/T-BD-1.csv")
        lines = csv_file.content.decode("utf-8-sig").splitlines()
        assert len(lines) == 3 and "079303001234" in lines[1]
        slip_link = re.search(r'href="(/lab/slips/\d+/\d+)"', page.text)
        assert slip_link is not None
        slip = await c.get(slip_link.group(1))
        assert "PHIẾU KẾT QUẢ XÉT NGHIỆM" in slip.text and "<svg" in slip.text
    with Session(env.engine) as db:
        assert [r.value for r in db.scalars(select(Result).order_by(Result.id))] == [
            "negative",
            "positive",
        ]


CSV = "\ufeffMã ống;Kết quả;Ngày trả kết quả\r\nT-BD-1;Âm tính;26/11/2026 10:00\r\n"


async def test_csv_import_checks_applies_once_and_rejects_a_bad_file_whole(env: Env) -> None:
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, "THUNG-03", "T-BD-1")
        files = {"file": ("ket-qua.csv", CSV.encode(), "text/csv")}
        check = await c.post(
            "/lab/import", data={"action": "check", "csrf_token": csrf}, files=files
        )
        assert check.status_code == 200
        assert "Tệp hợp lệ" in check.text and 'data-status="new"' in check.text
        b64 = re.search(r'name="content_b64" value="([^"]+)"', check.text)
        assert b64 is not None
        applied = await c.post(
            "/lab/import",
            data={
                "action": "apply",
                "content_b64": b64.group(1),
                "filename": "ket-qua.csv",
                "csrf_token": csrf,
            },
        )
        assert 'id="import-status">Đã nhập: 1' in applied.text
        files = {"file": ("ket-qua.csv", CSV.encode(), "text/csv")}
        again = await c.post(
            "/lab/import", data={"action": "apply", "csrf_token": csrf}, files=files
        )
        assert 'data-status="unchanged"' in again.text
        bad = "tube,result\nT-BD-1,negative\nT-XX-1,positive\n"
        files = {"file": ("bad.csv", bad.encode(), "text/csv")}
        rejected = await c.post(
            "/lab/import", data={"action": "apply", "csrf_token": csrf}, files=files
        )
        assert "Tệp bị từ chối" in rejected.text
        assert "Không có ống T-XX-1 trong các ống phòng xét nghiệm của bạn đã nhận" in rejected.text
        assert 'name="content_b64"' not in rejected.text
        wrong = {"file": ("x.csv", b"a;b\n1;2\n", "text/csv")}
        cols = await c.post(
            "/lab/import", data={"action": "check", "csrf_token": csrf}, files=wrong
        )
        assert "Không tìm thấy cột cho tube + result" in cols.text
        assert '<select name="map_tube">' in cols.text  # the columns offered for a hand mapping
    with Session(env.engine) as db:
        assert db.scalar(select(func.count()).select_from(Result)) == 1


async def test_lookup_answers_unknown_ids_and_wrong_birth_dates_the_same(env: Env) -> None:
    sample(env, "st-1", "T-BD-7", [("079303005555", "Phạm Thu Hà", "1999-04-30")], seq0=100)
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, "THUNG-04", "T-BD-7")
        r = await c.post(
            "/lab/results", data={"tube": "T-BD-7", "value": "negative", "csrf_token": csrf}
        )
        assert r.status_code == 303
    async with env.client() as anon:
        unknown = await anon.post(
            "/lookup", data={"id_number": "079303009999", "birth_date": "1999-04-30"}
        )
        known_wrong = await anon.post(
            "/lookup", data={"id_number": "079303005555", "birth_date": "1999-05-01"}
        )
        assert unknown.status_code == known_wrong.status_code == 200
        # The same page, byte for byte, but for what was typed back into the form.
        assert unknown.text.replace("079303009999", "X") == known_wrong.text.replace(
            "079303005555", "X"
        ).replace("1999-05-01", "1999-04-30")
        assert unknown.headers["cache-control"] == "no-store"
        found = await anon.post(
            "/lookup", data={"id_number": "079303005555", "birth_date": "30/04/1999"}
        )
        assert 'data-status="found"' in found.text and "Phạm Thu Hà" in found.text
        assert "Âm tính" in found.text and "PHIẾU KẾT QUẢ" in found.text
        token = re.search(r"/v/([0-9]+\.[0-9]+\.[A-Za-z0-9_-]+)", found.text)
        assert token is not None
        verify = await anon.get(f"/v/{token.group(1)}")
        assert verify.status_code == 200 and 'data-valid="yes"' in verify.text
        assert "P*** T** H*" in verify.text and "Phạm Thu Hà" not in verify.text
        forged = await anon.get(f"/v/{token.group(1)[:-2]}xx")
        assert forged.status_code == 404 and 'data-valid="no"' in forged.text


async def test_lookup_is_rate_limited_per_address_without_telling_ids_apart(env: Env) -> None:
    async with env.client() as anon:
        statuses = []
        for i in range(11):
            r = await anon.post(
                "/lookup", data={"id_number": f"00109001{i:04d}", "birth_date": "1990-01-01"}
            )
            statuses.append(r.status_code)
        assert statuses == [200] * 10 + [429]
        assert 'data-status="limited"' in r.text
        # Declarations from the same desk are counted apart from lookups.
        ok = await anon.post("/declare", data={"name": "Lê Văn Tám", "birth_date": "2001-01-01"})
        assert ok.status_code == 200
    # Housekeeping forgets attempts no limit looks at any more.
    from datetime import UTC, datetime, timedelta

    from server.models import LookupAttempt
    from server.public import prune_attempts

    with Session(env.engine) as db, db.begin():
        assert prune_attempts(db, older_than=datetime.now(UTC) - timedelta(hours=1)) == 0
        assert prune_attempts(db, older_than=datetime.now(UTC) + timedelta(seconds=1)) == 12
        assert db.scalar(select(func.count()).select_from(LookupAttempt)) == 0


def addr_client(env: Env, addr: str) -> httpx.AsyncClient:
    """An anonymous client coming from ``addr``."""
    return env.client(transport=httpx.ASGITransport(app=env.app, client=(addr, 50000)))


async def ask(env: Env, id_number: str, birth_date: str, addr: str = "10.0.0.1") -> str:
    async with addr_client(env, addr) as anon:
        r = await anon.post("/lookup", data={"id_number": id_number, "birth_date": birth_date})
    assert r.status_code == 200, r.text
    return r.text


FOUND = 'data-status="found"'


async def enter(env: Env, box: str, tube: str, value: str) -> None:
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, box, tube)
        r = await c.post("/lab/results", data={"tube": tube, "value": value, "csrf_token": csrf})
        assert r.status_code == 303


async def test_a_large_import_does_not_hold_up_other_requests(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a file is being checked (held here until a citizen's lookup and a scan have been
    answered), the server goes on serving: the import runs in the thread pool, not in the
    event loop that serves every page."""
    import threading

    import anyio

    from server.web import lab_pages

    started, release = threading.Event(), threading.Event()
    real_parse = lab_pages.parse_results_csv

    def slow_parse(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(20)  # a long file; in an event loop this would freeze the server
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(lab_pages, "parse_results_csv", slow_parse)
    rows = "".join(f"T-BIG-{i:05d},negative\n" for i in range(20_000))
    big = ("tube,result\n" + rows).encode()
    async with session(env, "lab") as (c, csrf), anyio.create_task_group() as tg:
        answers: dict[str, Any] = {}

        async def do_import() -> None:
            answers["import"] = await c.post(
                "/lab/import",
                data={"action": "check", "csrf_token": csrf},
                files={"file": ("big.csv", big, "text/csv")},
            )

        tg.start_soon(do_import)
        assert await anyio.to_thread.run_sync(started.wait, 20)
        async with env.client() as anon:
            answers["lookup"] = await anon.post(
                "/lookup", data={"id_number": "079303009999", "birth_date": "1999-04-30"}
            )
        answers["scan"] = await c.post(
            "/lab/results/tube", data={"code": "T-BD-1", "csrf_token": csrf}, headers=JSON
        )
        answered_during_import = "import" not in answers
        release.set()
    assert answered_during_import
    assert answers["lookup"].status_code == 200 and answers["scan"].status_code == 404
    assert answers["import"].status_code == 200
    assert "Không có ống T-BIG-00000" in answers["import"].text  # the whole file was checked


async def test_columns_chosen_by_hand_on_the_page_keep_the_uploaded_file(env: Env) -> None:
    data = "Cot A;Cot B\nT-BD-1;Âm tính\n".encode()
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, "THUNG-09", "T-BD-1")
        first = await c.post(
            "/lab/import",
            data={"action": "check", "csrf_token": csrf},
            files={"file": ("lis.csv", data, "text/csv")},
        )
        assert "Không tìm thấy cột cho tube + result" in first.text
        assert "Tệp lis.csv được giữ lại" in first.text
        kept = re.search(r'name="content_b64" value="([^"]+)"', first.text)
        assert kept is not None
        form = {
            "action": "apply",
            "csrf_token": csrf,
            "content_b64": kept.group(1),
            "filename": "lis.csv",
            "map_tube": "Cot A",
            "map_result": "Cot B",
        }
        applied = await c.post("/lab/import", data=form)
        assert 'id="import-status">Đã nhập: 1' in applied.text
    with Session(env.engine) as db:
        assert db.scalar(select(func.count()).select_from(Result)) == 1


async def test_the_import_api_takes_a_column_mapping(env: Env) -> None:
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, "THUNG-08", "T-BD-1")
    data = b"Cot A;Cot B\nT-BD-1;negative\n"
    async with env.client("lab") as api:
        guessed = await api.post(
            "/api/lab/results/import", files={"file": ("lis.csv", data, "text/csv")}
        )
        assert guessed.status_code == 200 and guessed.json()["errors"] == 1
        mapped = await api.post(
            "/api/lab/results/import?apply=true&map_tube=Cot%20A&map_result=Cot%20B",
            files={"file": ("lis.csv", data, "text/csv")},
        )
    body = mapped.json()
    assert (body["applied"], body["new"], body["mapping"]) == (
        True,
        1,
        {"tube": "Cot A", "result": "Cot B"},
    )


async def test_people_sampled_with_a_health_qr_look_up_by_qid_or_unmasked_number(
    env: Env,
) -> None:
    masked = health_qr_person("QX7H2K9M4P", "******001234", "2003-**-**", "TRAN THI MAI")
    unmasked = health_qr_person("QB5N8R2T6W", "079303004321", "2003-08-15", "LE VAN HUNG")
    year_only = health_qr_person("QC3D5F7G9J", "079190007777", "1990-**-**", "PHAM VAN LONG")
    sample_persons(env, "st-1", "T-QR-1", [masked, unmasked, year_only], seq0=300)
    await enter(env, "THUNG-QR1", "T-QR-1", "negative")
    # The QID with the date of birth: the QR carried the year only, so that is what counts.
    page = await ask(env, "QX7H2K9M4P", "2003-05-05", "10.0.0.1")
    assert FOUND in page and "TRAN THI MAI" in page and "Âm tính" in page
    assert FOUND in await ask(env, "qx7h2k9m4p", "05/05/2003", "10.0.0.2")
    assert FOUND not in await ask(env, "QX7H2K9M4P", "2004-05-05", "10.0.0.3")
    # A document number the QR carried unmasked, with the full date it carried.
    assert FOUND in await ask(env, "079303004321", "2003-08-15", "10.0.0.4")
    assert FOUND not in await ask(env, "079303004321", "2003-08-16", "10.0.0.5")
    # An unmasked number with a year only is not enough (a CCCD number tells the year)...
    assert FOUND not in await ask(env, "079190007777", "1990-06-06", "10.0.0.6")
    # ...the QID is; and a masked number finds nobody.
    assert FOUND in await ask(env, "QC3D5F7G9J", "1990-06-06", "10.0.0.7")
    assert FOUND not in await ask(env, "******001234", "2003-05-05", "10.0.0.8")
    assert FOUND not in await ask(env, "001234", "2003-05-05", "10.0.0.8")
    # The same person sampled later with the CCCD card (a full date): the number and that date
    # show both samples, the one under the QID too.
    sample(env, "st-1", "T-QR-2", [("079190007777", "Phạm Văn Long", "1990-01-31")], seq0=320)
    await enter(env, "THUNG-QR2", "T-QR-2", "positive")
    page = await ask(env, "079190007777", "1990-01-31", "10.0.0.9")
    assert FOUND in page and page.count('<div class="sample">') == 2
    assert "Mẫu gộp dương tính" in page and "Âm tính" in page
    assert FOUND not in await ask(env, "079190007777", "1990-06-06", "10.0.0.10")


async def test_a_known_qid_with_a_wrong_date_looks_like_an_unknown_qid(env: Env) -> None:
    person = health_qr_person("QX7H2K9M4P", "******001234", "2003-**-**", "TRAN THI MAI")
    sample_persons(env, "st-1", "T-QR-3", [person], seq0=340)
    await enter(env, "THUNG-QR3", "T-QR-3", "negative")
    known_wrong = await ask(env, "QX7H2K9M4P", "2002-12-31", "10.0.1.1")
    unknown = await ask(env, "QZ0000000000", "2002-12-31", "10.0.1.2")
    assert 'data-status="none"' in known_wrong
    assert known_wrong.replace("QX7H2K9M4P", "X") == unknown.replace("QZ0000000000", "X")
    # Also for document numbers: a known one with a wrong date, and one nobody has.
    a = await ask(env, "079303001234", "1990-01-01", "10.0.1.3")  # in the fixture, no date
    b = await ask(env, "079303009876", "1990-01-01", "10.0.1.4")
    assert a.replace("079303001234", "X") == b.replace("079303009876", "X")


async def test_one_id_is_limited_from_every_address_and_per_day(env: Env) -> None:
    """Ten lookups of one ID an hour from anywhere, twenty a day: guessing a date of birth
    cannot be spread over addresses or over days."""
    statuses = []
    for i in range(11):
        async with addr_client(env, f"10.2.0.{i}") as anon:
            r = await anon.post(
                "/lookup", data={"id_number": "079303005555", "birth_date": f"1999-01-{i + 1:02d}"}
            )
        statuses.append(r.status_code)
    assert statuses == [200] * 10 + [429]
    assert 'data-status="limited"' in r.text and "Quá nhiều lần thử" in r.text
    async with addr_client(env, "10.2.0.10") as anon:  # another ID from that address is fine
        other = await anon.post(
            "/lookup", data={"id_number": "079303005556", "birth_date": "1999-01-01"}
        )
    assert other.status_code == 200
    # The daily cap, with the clock moved: ten an hour, but no more than twenty in a day.
    from datetime import UTC, datetime, timedelta

    from server.public import Limits, lookup

    services = env.app.state.lab
    limits = Limits(per_addr=1000, per_key=10, per_key_window_s=3600, per_key_day=20)
    start = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)

    def attempts(at: datetime, n: int) -> list[str]:
        with Session(env.engine) as db:
            return [
                lookup(
                    db,
                    keyed=services.keyed,
                    signer=services.ctx.signer,
                    limits=limits,
                    remote_addr=f"10.3.0.{i}",
                    id_number="079199000001",
                    birth_date="1999-02-02",
                    now=at,
                ).status
                for i in range(n)
            ]

    assert attempts(start, 11) == ["none"] * 10 + ["limited"]
    assert attempts(start + timedelta(hours=2), 10) == ["none"] * 9 + ["limited"]
    assert attempts(start + timedelta(hours=5), 1) == ["limited"]  # 20 in the last 24 hours
    assert attempts(start + timedelta(hours=26), 1) == ["none"]


async def test_forwarded_addresses_count_only_from_trusted_proxies(env: Env) -> None:
    """What ``swabline server`` runs: uvicorn's proxy-headers middleware with
    ``http.trusted_proxies``. Behind the proxy every client has its own limit; a client that
    sends its own X-Forwarded-For from elsewhere does not escape its limit."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from server.config import HttpConfig

    trusted = HttpConfig(trusted_proxies=["10.9.0.0/24"]).trusted_proxies
    app = ProxyHeadersMiddleware(env.app, trusted_hosts=trusted)

    async def lookups(proxy: str, clients: list[str]) -> list[int]:
        transport = httpx.ASGITransport(app=app, client=(proxy, 40000))  # type: ignore[arg-type]
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            for i, client in enumerate(clients):
                r = await c.post(
                    "/lookup",
                    data={"id_number": f"07930300{i:04d}", "birth_date": "1990-01-01"},
                    headers={"X-Forwarded-For": client},
                )
                out.append(r.status_code)
        return out

    people = [f"203.0.113.{i}" for i in range(12)]
    assert await lookups("10.9.0.7", people) == [200] * 12  # twelve people, one proxy
    assert await lookups("198.51.100.9", people) == [200] * 10 + [429] * 2  # one client


async def test_ipv6_addresses_of_one_network_share_a_limit() -> None:
    from server.public import address_group

    assert address_group("2001:db8:1:2::1") == address_group("2001:db8:1:2:abcd::9")
    assert address_group("2001:db8:1:2::1") != address_group("2001:db8:1:3::1")
    assert address_group("::ffff:10.0.0.1") == "10.0.0.1" == address_group("10.0.0.1")
    assert address_group("testclient") == "testclient"


async def test_registration_desk_staff_are_not_limited_like_the_public(db_url: str) -> None:
    from server.config import PublicConfig, ServerConfig
    from server.models import AuditEntry
    from tests.server.conftest import build_env

    env = build_env(db_url, ServerConfig(public=PublicConfig(declare_per_addr=2)))
    try:
        person = {"name": "Lê Văn Tám", "birth_date": "2001-01-01"}
        async with env.client() as anon:
            codes = [(await anon.post("/declare", data=person)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        async with session(env, "staff-bd") as (c, csrf):
            form = await c.get("/declare")
            assert f'name="csrf_token" value="{csrf}"' in form.text
            made = [
                (await c.post("/declare", data={**person, "csrf_token": csrf})).status_code
                for _ in range(4)
            ]
            assert made == [200] * 4
            # Without the desk form's token it is a public declaration, limited as one.
            assert (await c.post("/declare", data=person)).status_code == 429
        async with session(env, "ops") as (c, csrf):  # no personal data: not desk staff
            r = await c.post("/declare", data={**person, "csrf_token": csrf})
            assert r.status_code == 429
        with Session(env.engine) as db:
            entries = db.scalars(
                select(AuditEntry).where(AuditEntry.action == "declaration.create")
            ).all()
        assert [e.actor for e in entries] == ["staff-bd"] * 4
        assert entries[0].organisation_id == env.org["HN-BD-TYT"]
        assert entries[0].after is not None and entries[0].after["name"] == "Lê Văn Tám"
        assert "lookup_code_hash" not in entries[0].after
    finally:
        env.engine.dispose()


async def test_a_declaration_gives_a_qr_stations_accept_and_a_code_that_finds_results(
    env: Env, tmp_path: Path
) -> None:
    async with env.client() as anon:
        form = await anon.get("/declare?lang=en")
        assert "Declare yourself for a personal QR code" in form.text
        bad = await anon.post("/declare", data={"name": "", "birth_date": "2990-01-01"})
        assert bad.status_code == 400
        assert 'id="err-name"' in bad.text and 'id="err-birth_date"' in bad.text
        done = await anon.post(
            "/declare",
            data={
                "name": "Võ Thị Sáu",
                "birth_date": "1987-09-02",
                "sex": "female",
                "document": "079187001234",
                "phone": "0912 345 678",
                "address": "Côn Đảo",
            },
        )
        assert done.status_code == 200
        payload = re.search(r'data-payload="([^"]+)"', done.text)
        code = re.search(r'id="lookup-code">([A-Z0-9-]+)<', done.text)
        assert payload is not None and code is not None
    qr = parse_health_qr(payload.group(1))
    assert qr is not None and QID_RE.fullmatch(qr.qid)
    assert payload.group(1) == f"******001234|VO THI SAU|1987-**-**|0|{qr.qid}|"
    assert "<svg" in done.text  # the QR itself is read back with zbar in the browser test
    with Session(env.engine) as db:
        person = db.scalars(select(Person).where(Person.key == qr.qid)).one()
        assert (person.key_type, person.name, person.birth_date) == (
            "qid",
            "Võ Thị Sáu",
            "1987-09-02",
        )
        declaration = db.scalars(select(Declaration)).one()
        assert declaration.phone == "0912345678"
        assert code.group(1).replace("-", "") not in declaration.lookup_code_hash
    # The station's own parser reads the QR as printed, from a camera or a keyboard-mode
    # scanner; its person goes through ingest (which keeps the declared full name and date);
    # the lab enters the result; the person finds it.
    for lossy in (False, True):
        scanned = classify_code(payload.group(1), CodeRules.build(), lossy=lossy)
        assert isinstance(scanned, PersonCode) and scanned.format == "health_qr", scanned
        assert (scanned.person.key_type, scanned.person.key) == ("qid", qr.qid)
        assert (scanned.person.name, scanned.person.birth_date) == ("VO THI SAU", "1987-**-**")
    person = scanned.person.model_dump(exclude_none=True)
    sample(env, "st-1", "T-BD-8", [], seq0=200)
    store_resilient(
        env.engine,
        classify(
            [
                message(
                    record(
                        "st-1",
                        210,
                        "person_added",
                        {"tube": "T-BD-8", "person": person, "position": 1},
                        code=payload.group(1),
                    )
                )
            ]
        ),
    )
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, "THUNG-05", "T-BD-8")
        await c.post(
            "/lab/results", data={"tube": "T-BD-8", "value": "negative", "csrf_token": csrf}
        )
    async with env.client() as anon:
        by_code = await anon.post("/lookup", data={"code": code.group(1).lower()})
        assert 'data-status="found"' in by_code.text and "Võ Thị Sáu" in by_code.text
        by_id = await anon.post(
            "/lookup", data={"id_number": "079187001234", "birth_date": "1987-09-02"}
        )
        assert 'data-status="found"' in by_id.text
        by_qid = await anon.post("/lookup", data={"id_number": qr.qid, "birth_date": "1987-09-02"})
        assert 'data-status="found"' in by_qid.text
        # Declared on someone's behalf: the QR's kind is 1, and stations take it as well.
        other = await anon.post(
            "/declare", data={"name": "Ông Năm", "birth_date": "1940-05-05", "on_behalf": "1"}
        )
    behalf = re.search(r'data-payload="([^"]+)"', other.text)
    assert behalf is not None and behalf.group(1).split("|")[3] == "1"
    scanned = classify_code(behalf.group(1), CodeRules.build())
    assert isinstance(scanned, PersonCode) and scanned.person.name == "ONG NAM"


async def test_reports_page_charts_and_downloads_are_scoped(env: Env) -> None:
    async with session(env, "admin") as (c, _):
        page = await c.get("/reports?period=week&day=2026-09-21")
        assert page.status_code == 200
        assert page.text.count("<svg") >= 3 and 'id="total-samples">2<' in page.text
        xlsx = await c.get("/reports/download?format=xlsx&period=month")
        assert xlsx.headers["content-type"].startswith("application/vnd.openxmlformats")
        book = load_workbook(io.BytesIO(xlsx.content))
        assert book.sheetnames == ["Tổng hợp", "Theo ngày", "Trạm"]
        csv_en = await c.get("/reports/download?format=csv&period=day&lang=en")
        assert csv_en.content.decode("utf-8-sig").startswith(
            "Period,Level,Code,Unit,District,Samples"
        )
    async with session(env, "staff-bd") as (c, _):
        page = await c.get("/reports?period=week&day=2026-09-21")
        assert 'id="total-samples">1<' in page.text
        assert "Cầu Giấy" not in page.text
        other = await c.get(f"/reports?node={env.org['HN-CG-TYT']}")
        assert other.status_code == 404
    async with session(env, "ops") as (c, _):
        assert (await c.get("/reports")).status_code == 403


async def test_every_import_problem_has_a_text() -> None:
    root = Path(__file__).resolve().parents[2] / "server"
    codes: set[str] = set()
    for name in ("result_csv.py", "results.py"):
        codes |= set(re.findall(r'fail\(\s*"([a-z_0-9]+)"', (root / name).read_text()))
    assert len(codes) >= 15
    assert sorted(c for c in codes if f"import.err.{c}" not in TEXTS) == []


async def test_every_text_the_templates_use_is_in_the_catalogue() -> None:
    folder = Path(__file__).resolve().parents[2] / "server" / "web" / "templates"
    used: set[str] = set()
    for template in folder.glob("*.html"):
        used |= set(
            re.findall(r"""\bt\(\s*["']([a-z0-9_.]*[a-z0-9_])["']\s*[,)]""", template.read_text())
        )
    assert used, "no texts found"
    assert sorted(k for k in used if k not in TEXTS) == []
    assert all(len(v) == 2 and all(v) for v in TEXTS.values())


async def test_lifecycle_events_come_once_per_reception(env: Env) -> None:
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, "THUNG-06", "T-CG-1", "T-CG-1")
    with Session(env.engine) as db:
        kinds = db.scalars(select(SampleEvent.kind).order_by(SampleEvent.id)).all()
    assert kinds.count("received_at_lab") == 1


async def test_the_json_api_enters_imports_and_reports_with_a_token(env: Env) -> None:
    async with session(env, "lab") as (c, csrf):
        await receive(c, csrf, env, "THUNG-07", "T-BD-1", "T-CG-1")
    async with env.client("lab") as api:
        r = await api.post("/api/lab/results", json={"tube": "T-BD-1", "value": "positive"})
        assert r.status_code == 200, r.text
        assert r.json() == {"entry": "saved", "tube": "T-BD-1", "result": "positive", "persons": 2}
        again = await api.post("/api/lab/results", json={"tube": "T-BD-1", "value": "negative"})
        assert again.status_code == 400 and "reason" in again.json()["detail"]
        nowhere = await api.post("/api/lab/results", json={"tube": "T-NONE", "value": "negative"})
        assert nowhere.status_code == 404
        csv = b"tube,result\nT-CG-1,negative\nT-BD-1,positive\n"
        check = await api.post(
            "/api/lab/results/import", files={"file": ("r.csv", csv, "text/csv")}
        )
        body = check.json()
        assert (body["applied"], body["new"], body["unchanged"]) == (False, 1, 1)
        done = await api.post(
            "/api/lab/results/import?apply=true", files={"file": ("r.csv", csv, "text/csv")}
        )
        assert done.json()["applied"] is True
        recalls = (await api.get("/api/lab/recalls")).json()
        assert [(p["tube"], len(p["persons"])) for p in recalls] == [("T-BD-1", 2)]
        assert recalls[0]["persons"][0]["key"] == "079303001234"
    async with env.client("admin") as api:
        report = (await api.get("/api/reports?period=week&day=2026-09-21")).json()
        assert report["label"] == "2026-W39" and report["node"] == "HN"
        province = next(r for r in report["rows"] if r["level"] == "province")
        assert province["metrics"]["samples"] == 2
        assert (province["metrics"]["positive"], province["metrics"]["negative"]) == (1, 1)
        assert province["metrics"]["positivity"] == 0.5
    async with env.client("ops") as api:
        assert (await api.get("/api/reports")).status_code == 403
        assert (await api.get("/api/lab/recalls")).status_code == 403


def many_positive_pools(env: Env, recent: int, older: int) -> None:
    """``recent`` positive pools resulted today and ``older`` ones 30 days ago (two persons
    each), received and imported the way a lab does it."""
    from datetime import datetime, timedelta

    from server.access import system_principal
    from server.lab import receive_tube
    from server.result_csv import parse_results_csv
    from server.results import import_results
    from tests.server.factories import pool_session

    services = env.app.state.lab
    now = datetime.now(services.tz)
    codes = [f"T-RC-{i:03d}" for i in range(recent + older)]
    records = []
    for i, code in enumerate(codes):
        keys = [f"0790{i:04d}0001", f"0790{i:04d}0002"]
        records += pool_session("st-1", code, keys, start=1000 + 10 * i)
    store_resilient(env.engine, classify([message(r) for r in records]))
    lines = ["tube,result,reported_at"]
    for i, code in enumerate(codes):
        when = now - timedelta(days=30 if i >= recent else 0, minutes=i)
        lines.append(f"{code},positive,{when:%Y-%m-%d %H:%M}")
    parsed = parse_results_csv("\n".join(lines).encode(), tz=services.tz)
    with Session(env.engine) as db, db.begin():
        for code in codes:
            receive_tube(db, tube_code=code, lab_id=env.org["HN-LAB"])
        out = import_results(
            db,
            system_principal("test"),
            services.ctx,
            parsed,
            filename="r.csv",
            sha256="0",
            apply=True,
        )
        assert out.applied, out.parsed.errors


async def test_recall_lists_page_by_days_and_say_how_many_there_are(env: Env) -> None:
    from datetime import datetime, timedelta

    many_positive_pools(env, recent=55, older=5)
    today = datetime.now(env.app.state.lab.tz).date()
    async with session(env, "admin") as (c, _):
        first = await c.get("/lab/recalls")
        assert first.status_code == 200
        assert 'data-total="55"' in first.text and first.text.count('class="panel recall"') == 50
        assert "Mẫu gộp 1–50 trong tổng số 55 có kết quả dương tính" in first.text
        assert "Tệp CSV gồm cả 55 mẫu gộp của các ngày này." in first.text
        nxt = re.search(
            r'id="recall-next" href="\?([^"]+)"|href="\?([^"]+)" id="recall-next"', first.text
        )
        assert nxt is not None
        second = await c.get("/lab/recalls?" + (nxt.group(1) or nxt.group(2)).replace("&amp;", "&"))
        assert (
            second.text.count('class="panel recall"') == 5 and 'id="recall-next"' not in second.text
        )
        assert "Mẫu gộp 51–55 trong tổng số 55" in second.text
        csv_link = re.search(r'href="(/lab/recalls\.csv\?[^"]+)" id="recall-csv"', first.text)
        assert csv_link is not None
        recent_csv = await c.get(csv_link.group(1).replace("&amp;", "&"))
        assert len(recent_csv.content.decode("utf-8-sig").splitlines()) == 1 + 55 * 2
        since = (today - timedelta(days=60)).isoformat()
        wide = await c.get(f"/lab/recalls.csv?from={since}&to={today.isoformat()}")
        rows = wide.content.decode("utf-8-sig").splitlines()
        assert len(rows) == 1 + 60 * 2
        assert len({r.split(",")[0] for r in rows[1:]}) == 60  # every pool, none cut
        wide_page = await c.get(f"/lab/recalls?from={since}&to={today.isoformat()}&lang=en")
        assert "Pools 1–50 of 60 with a positive result from" in wide_page.text
        too_long = await c.get(f"/lab/recalls.csv?from=2026-01-01&to={today}&lang=vi")
        assert too_long.status_code == 400
        assert "Chọn tối đa 92 ngày một lần." in too_long.text


async def test_refusals_on_pages_and_scanner_fields_speak_vietnamese_first(env: Env) -> None:
    async with session(env, "lab") as (c, csrf):
        missing = await c.get("/lab/tubes/T-NOPE")
        assert missing.status_code == 404
        assert "Không có ống T-NOPE trong các ống bạn được xem." in missing.text
        assert "among the tubes" not in missing.text
        english = await c.get("/lab/tubes/T-NOPE?lang=en")
        assert "No tube T-NOPE among the tubes you can see." in english.text
        await c.get("/lab?lang=vi")
        await receive(c, csrf, env, "THUNG-E1", "T-BD-1")
        # The same box label while its reception is open, now for packing: refused on the page
        # itself, in Vietnamese, with nothing reflected from the address bar.
        busy = await c.post(
            "/lab/batches",
            data={
                "code": "THUNG-E1",
                "action": "receive",
                "facility_id": env.org["HN-BD-TYT"],
                "csrf_token": csrf,
            },
        )
        assert busy.status_code == 404 and "Bạn không làm việc cho cơ sở này." in busy.text
    async with session(env, "admin") as (c, csrf):
        await c.get("/lab?lang=vi")
        packing = await c.post(
            "/lab/batches",
            data={
                "code": "THUNG-E1",
                "action": "pack",
                "facility_id": env.org["HN-BD-TYT"],
                "csrf_token": csrf,
            },
        )
        assert packing.status_code == 409 and 'id="receive-form"' in packing.text
        assert (
            "Thùng THUNG-E1 đang được dùng (chưa kết thúc): hãy kết thúc thùng đó trước."
            in packing.text
        )
    async with session(env, "lab") as (c, csrf):
        spoof = await c.get("/lab?error=Your+account+is+locked,+call+0900")
        assert "Your account is locked" not in spoof.text
        box = re.search(r'href="(/lab/batches/\d+)">THUNG-E1', (await c.get("/lab")).text)
        assert box is not None
        await c.post(f"{box.group(1)}/close", data={"csrf_token": csrf})
        late = await c.post(
            f"{box.group(1)}/scan", data={"code": "T-CG-1", "csrf_token": csrf}, headers=JSON
        )
        assert late.status_code == 409
        assert late.json()["message"] == "Thùng THUNG-E1 không ở bước nhận mẫu."
        expired = await c.post(f"{box.group(1)}/scan", data={"code": "T-CG-1"})
        assert expired.status_code == 403
        assert "Biểu mẫu đã hết hạn: tải lại trang rồi làm lại." in expired.text
        scanner = await c.get("/lab/results")  # the text shown when the network is gone
        offline = json.dumps("Mất kết nối tới máy chủ: chưa ghi nhận, hãy quét lại.")
        assert offline in scanner.text and '"network"' not in scanner.text
    async with session(env, "staff-bd") as (c, _):
        denied = await c.get("/lab")
        assert denied.status_code == 403 and "Bạn không có quyền làm việc này." in denied.text
        assert 'id="error-detail"' in denied.text  # the English detail, folded away


async def test_over_long_public_form_fields_get_a_page_not_json(env: Env) -> None:
    async with env.client() as anon:
        lookup = await anon.post("/lookup", data={"id_number": "1" * 65, "birth_date": "x"})
        declare = await anon.post("/declare", data={"name": "A" * 401, "birth_date": "2000-01-01"})
        english = await anon.post("/declare?lang=en", data={"phone": "1" * 33})
        api = await anon.post("/api/auth/login", json={"username": 5})
    for r in (lookup, declare):
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
        assert "Thông tin gửi lên không hợp lệ (quá dài hoặc sai dạng)." in r.text
    assert "What was sent is not valid (too long or malformed)." in english.text
    assert api.status_code == 422 and api.headers["content-type"] == "application/json"


async def test_the_verify_page_says_when_a_slip_was_corrected(env: Env) -> None:
    sample(env, "st-1", "T-BD-9", [("079303006666", "Đỗ Minh Tâm", "2000-02-29")], seq0=400)
    await enter(env, "THUNG-V1", "T-BD-9", "negative")
    page = await ask(env, "079303006666", "2000-02-29")
    token = re.search(r"/v/([0-9]+\.[0-9]+\.[A-Za-z0-9_-]+)", page)
    assert token is not None
    async with env.client() as anon:
        before = await anon.get(f"/v/{token.group(1)}")
    assert 'data-valid="yes"' in before.text
    assert "Kết quả hiện tại vẫn đúng như trên phiếu." in before.text
    async with session(env, "lab") as (c, csrf):
        r = await c.post(
            "/lab/tubes/T-BD-9/correct",
            data={"value": "positive", "reason": "nhầm mẫu", "csrf_token": csrf},
        )
        assert r.status_code == 303
    async with env.client() as anon:
        after = await anon.get(f"/v/{token.group(1)}")
        english = await anon.get(f"/v/{token.group(1)}?lang=en")
    assert after.status_code == 200 and 'data-valid="yes"' in after.text  # still a real slip
    assert "Kết quả trên phiếu này đã được sửa. Kết quả hiện tại:" in after.text
    assert "Kết quả hiện tại vẫn đúng" not in after.text
    assert "The result on this slip has since been corrected." in english.text


async def test_the_notification_log_shows_every_attempt_to_province_admins_only(
    env: Env,
) -> None:
    from datetime import UTC, datetime, timedelta

    from server.models import Notification, NotificationDelivery

    await enter(env, "THUNG-N1", "T-BD-1", "negative")
    with Session(env.engine) as db, db.begin():
        from server.results import sweep_notifications

        assert (
            sweep_notifications(
                db, env.app.state.lab.ctx, since=datetime.now(UTC) - timedelta(hours=1)
            )
            == 2
        )
        first = db.scalars(select(Notification).order_by(Notification.id)).first()
        assert first is not None
        now = datetime.now(UTC)
        db.add(
            NotificationDelivery(
                notification_id=first.id,
                attempt=1,
                at=now,
                hook="webhook",
                ok=False,
                status_code=503,
                error="HTTP 503 from the gateway",
                duration_ms=12.0,
            )
        )
        first.attempts, first.last_error = 1, "HTTP 503 from the gateway"
        first_id = first.id
    async with session(env, "admin") as (c, _):
        log = await c.get("/lab/notifications")
    assert log.status_code == 200
    rows = re.findall(r"<tr><td>(\d+)</td>", log.text)
    assert sorted(int(r) for r in rows) == [first_id, first_id + 1]  # both persons of the pool
    assert "HTTP 503 from the gateway" in log.text and " 503 12 ms" in log.text
    async with session(env, "mgr-bd") as (c, _):  # audit.read, but one facility only
        refused = await c.get("/lab/notifications")
    assert refused.status_code == 404
    assert "Nhật ký thông báo chỉ dành cho quản trị cấp tỉnh." in refused.text
    async with session(env, "lab") as (c, _):
        assert (await c.get("/lab/notifications")).status_code == 403


async def test_stored_report_files_are_listed_and_downloaded_within_scope(env: Env) -> None:
    from datetime import date

    from server.report_files import generate
    from server.reports import Period, PeriodKind

    week = Period.containing(PeriodKind.WEEK, date(2026, 9, 21))
    services = env.app.state.lab
    assert generate(env.engine, tz=services.tz, lang="vi", periods=[week]) == 6  # HN, 2 districts
    async with session(env, "admin") as (c, _):
        page = await c.get("/reports?period=week&day=2026-09-21")
        links = dict(
            (name, href)
            for href, name in re.findall(r'href="(/reports/files/\d+)"[^>]*>([^<]+)<', page.text)
        )
        assert (
            "swabline-HN-week-2026-W39.csv" in links
            and "swabline-HN-BD-week-2026-W39.xlsx" in links
        )
        got = await c.get(links["swabline-HN-week-2026-W39.csv"])
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        assert 'filename="swabline-HN-week-2026-W39.csv"' in got.headers["content-disposition"]
        text = got.content.decode("utf-8-sig")
        assert text.startswith("Kỳ báo cáo,Cấp,Mã,Đơn vị") and ",HN,Hà Nội,,2," in text
        book = await c.get(links["swabline-HN-BD-week-2026-W39.xlsx"])
        assert load_workbook(io.BytesIO(book.content)).sheetnames[0] == "Tổng hợp"
    async with session(env, "staff-bd") as (c, _):  # Ba Đình staff: not the province's file
        page = await c.get("/reports?period=week&day=2026-09-21")
        assert "swabline-HN-week-2026-W39.csv" not in page.text
        province_file = await c.get(links["swabline-HN-week-2026-W39.csv"])
        assert province_file.status_code == 404
        assert "Không có tệp báo cáo này." in province_file.text
        nowhere = await c.get("/reports/files/999999")
        assert nowhere.status_code == 404
