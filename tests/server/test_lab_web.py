"""The lab, public and report pages in-process (httpx.ASGITransport): reception by a scanner
field, result entry, CSV import, recall lists, result lookup, slip verification, declaration,
reports and downloads; on SQLite and PostgreSQL."""

from __future__ import annotations

import io
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
    recs = [
        record(
            station,
            seq0,
            "tube_opened",
            {"tube": tube, "mode": "pool", "pool_size": 10, "test_kind": "rt_pcr"},
            code=tube,
        )
    ]
    for i, (key, name, dob) in enumerate(people, 1):
        person = {"key_type": "cccd", "key": key, "name": name, "birth_date": dob}
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
        assert refused.status_code == 400 and "reason" in refused.json()["message"]
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
    # A station scans the QR (projection keeps the full name and date), the lab resolves.
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
                        {
                            "tube": "T-BD-8",
                            "person": {
                                "key_type": "qid",
                                "key": qr.qid,
                                "name": "VO THI SAU",
                                "birth_date": "1987-**-**",
                            },
                            "position": 1,
                        },
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
