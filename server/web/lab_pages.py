"""Lab pages: reception and packing of transport boxes, result entry by scanning a tube,
corrections, CSV imports, recall lists, printable slips, the notification log.

Scanner fields are ordinary forms (a keyboard-mode scanner types the code and Enter): they work
without JavaScript (the page reloads with the outcome) and, with it, post in the background,
keep the focus in the field, flash and beep (``_scanner.html``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from server import lab as lab_service
from server import results as results_service
from server.access import Permission, Principal, Scope
from server.errors import BadRequestError, HttpError, NotFoundError
from server.models import (
    LabBatch,
    Notification,
    NotificationDelivery,
    Organisation,
    Person,
    PoolMember,
    Result,
    ResultImport,
    Tube,
    User,
)
from server.public import load_slip
from server.result_csv import FIELDS, parse_results_csv
from server.samples import current_result
from server.signing import SlipRef
from server.web.deps import Db, PageCaller, check_form_csrf, remote_addr
from server.web.i18n import error_message, translator
from server.web.qr import qr_svg
from server.web.schemas import Text
from server.web.services import LabServices, Services, base_url, facilities, use_locale
from server.web.templating import language, render

router = APIRouter(include_in_schema=False)

SCAN_MESSAGES = {
    "packed": "batch.packed",
    "already_packed": "batch.already_packed",
    "received": "batch.received",
    "unexpected": "batch.unexpected",
    "already_received": "batch.already_received",
    "unknown_tube": "batch.unknown_tube",
}
SCAN_OK = {"packed", "received"}
"""Outcomes that get the cheerful beep; the others get the warning one."""


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _batch_in_scope(db: Session, scope: Scope, batch_id: int) -> LabBatch:
    batch = db.get(LabBatch, batch_id)
    if batch is None:
        raise NotFoundError(f"no box {batch_id}", text="lab.err.no_box")
    paths = [
        db.scalar(select(Organisation.path).where(Organisation.id == oid))
        for oid in (batch.lab_id, batch.origin_id)
        if oid is not None
    ]
    visible = any(scope.covers_path(p) for p in paths) or (not paths and scope.includes_unassigned)
    if not visible:
        raise NotFoundError(f"no box {batch_id}", text="lab.err.no_box")
    return batch


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def _refused(request: Request, db: Session, caller: Principal, exc: HttpError) -> Response:
    """A scanner field's refusal, in the reader's language (the page shows ``message``)."""
    use_locale(request, db, caller)
    text, _ = error_message(language(request), exc)
    return JSONResponse({"ok": False, "message": text, "code": exc.code}, status_code=exc.status)


# --- lab home, reception and packing -------------------------------------------------------


@router.get("/lab")
def lab_home(request: Request, caller: PageCaller, db: Db) -> Response:
    return _lab_home(request, caller, db)


def _lab_home(
    request: Request,
    caller: Principal,
    db: Session,
    *,
    error: HttpError | None = None,
) -> Response:
    """The lab home page; with ``error``, the refusal of a box scan in the reader's language."""
    use_locale(request, db, caller)
    scope = caller.require(Permission.LAB_WRITE)
    batches = db.scalars(
        select(LabBatch)
        .where(or_(scope.filter(LabBatch.lab_id), scope.filter(LabBatch.origin_id)))
        .order_by(LabBatch.id.desc())
        .limit(30)
    ).all()
    names = dict(db.execute(select(Organisation.id, Organisation.name)).all())
    return render(
        request,
        "lab_home.html",
        {
            "batches": batches,
            "names": names,
            "labs": facilities(db, scope, ("lab", "both")),
            "origins": facilities(db, scope, ("sampling", "both")),
            "error": error_message(language(request), error)[0] if error else None,
        },
        status_code=error.status if error else 200,
    )


@router.post("/lab/batches")
def lab_start_batch(
    request: Request,
    caller: PageCaller,
    db: Db,
    code: Annotated[Text, Form(max_length=200)],
    action: Annotated[str, Form(pattern="^(receive|pack)$")],
    facility_id: Annotated[int, Form(ge=1, le=2**62)],
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    scope = caller.require(Permission.LAB_WRITE)
    kinds = ("lab", "both") if action == "receive" else ("sampling", "both")
    if facility_id not in {f.id for f in facilities(db, scope, kinds)}:
        raise NotFoundError(
            f"no facility {facility_id} you can act for", text="lab.err.no_facility"
        )
    try:
        if action == "receive":
            batch = lab_service.start_reception(
                db, code=code, lab_id=facility_id, actor=caller, remote_addr=remote_addr(request)
            )
        else:
            batch = lab_service.start_packing(
                db, code=code, origin_id=facility_id, actor=caller, remote_addr=remote_addr(request)
            )
    except HttpError as exc:
        db.rollback()
        return _lab_home(request, caller, db, error=exc)
    db.commit()
    return _redirect(f"/lab/batches/{batch.id}")


@router.get("/lab/batches/{batch_id}")
def lab_batch(
    request: Request,
    caller: PageCaller,
    db: Db,
    batch_id: int,
) -> Response:
    use_locale(request, db, caller)
    scope = caller.require(Permission.LAB_WRITE)
    batch = _batch_in_scope(db, scope, batch_id)
    view = lab_service.view(db, batch)
    t = translator(language(request))
    all_labs = db.scalars(
        select(Organisation)
        .where(Organisation.facility_kind.in_(("lab", "both")), Organisation.active.is_(True))
        .order_by(Organisation.name)
    ).all()
    return render(
        request,
        "lab_batch.html",
        {
            "view": view,
            "all_labs": all_labs,
            "outcome": request.query_params.get("outcome")
            if request.query_params.get("outcome") in SCAN_MESSAGES
            else None,
            "scanned": request.query_params.get("code"),
            "messages": SCAN_MESSAGES,
            "messages_json": json.dumps(
                {k: t(v) for k, v in SCAN_MESSAGES.items()}, ensure_ascii=False
            ).replace("</", "<\\/"),
        },
    )


@router.post("/lab/batches/{batch_id}/scan")
def lab_batch_scan(
    request: Request,
    caller: PageCaller,
    db: Db,
    batch_id: int,
    code: Annotated[Text, Form(max_length=200)],
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    scope = caller.require(Permission.LAB_WRITE)
    batch = _batch_in_scope(db, scope, batch_id)
    try:
        if batch.status == "packing":
            outcome = lab_service.pack_tube(
                db, batch, code, actor=caller, remote_addr=remote_addr(request)
            )
        else:
            outcome = lab_service.receive_tube(
                db,
                tube_code=code,
                lab_id=batch.lab_id,
                batch=batch,
                actor=caller,
                remote_addr=remote_addr(request),
            )
    except HttpError as exc:
        db.rollback()
        if wants_json(request):
            return _refused(request, db, caller, exc)
        raise
    db.commit()
    view = lab_service.view(db, batch)
    if wants_json(request):
        return JSONResponse(
            {
                "ok": outcome.value in SCAN_OK,
                "outcome": outcome.value,
                "code": code.strip(),
                "counts": {f: view.count(f) for f in ("received", "pending", "unexpected")},
            }
        )
    return _redirect(f"/lab/batches/{batch.id}?outcome={outcome.value}&code={quote(code.strip())}")


@router.post("/lab/batches/{batch_id}/ship")
def lab_batch_ship(
    request: Request,
    caller: PageCaller,
    db: Db,
    batch_id: int,
    lab_id: Annotated[int | None, Form(ge=1, le=2**62)] = None,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    batch = _batch_in_scope(db, caller.require(Permission.LAB_WRITE), batch_id)
    if lab_id is not None:
        lab = db.get(Organisation, lab_id)
        if lab is None or lab.facility_kind not in ("lab", "both"):
            raise BadRequestError("choose a lab", text="lab.err.choose_lab")
    lab_service.ship(db, batch, lab_id=lab_id, actor=caller, remote_addr=remote_addr(request))
    db.commit()
    return _redirect(f"/lab/batches/{batch.id}")


@router.post("/lab/batches/{batch_id}/close")
def lab_batch_close(
    request: Request,
    caller: PageCaller,
    db: Db,
    batch_id: int,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    batch = _batch_in_scope(db, caller.require(Permission.LAB_WRITE), batch_id)
    lab_service.close_batch(db, batch, actor=caller, remote_addr=remote_addr(request))
    db.commit()
    return _redirect(f"/lab/batches/{batch.id}")


# --- result entry ---------------------------------------------------------------------------


def _tube_json(db: Session, tube: Tube) -> dict[str, Any]:
    current = current_result(db, tube.id)
    return {
        "tube": tube.code,
        "status": tube.status,
        "mode": tube.mode,
        "test_kind": tube.test_kind,
        "persons": len(results_service.members(db, tube.id)),
        "result": current.value if current is not None else None,
    }


@router.get("/lab/results")
def lab_results(request: Request, caller: PageCaller, db: Db) -> Response:
    use_locale(request, db, caller)
    caller.require(Permission.RESULT_WRITE)
    return render(
        request,
        "lab_results.html",
        {"saved": request.query_params.get("saved"), "code": request.query_params.get("tube")},
    )


@router.post("/lab/results/tube")
def lab_results_tube(
    request: Request,
    caller: PageCaller,
    db: Db,
    code: Annotated[Text, Form(max_length=200)],
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    """The scanned tube, before a result is chosen."""
    check_form_csrf(caller, csrf_token)
    scope = caller.require(Permission.RESULT_WRITE)
    try:
        tube = results_service.find_tube(db, scope, code)
    except NotFoundError as exc:
        if wants_json(request):
            return _refused(request, db, caller, exc)
        raise
    if wants_json(request):
        return JSONResponse({"ok": True, **_tube_json(db, tube)})
    return _redirect(f"/lab/tubes/{quote(tube.code, safe='')}")


@router.post("/lab/results")
def lab_results_enter(
    request: Request,
    caller: PageCaller,
    db: Db,
    services: Services,
    tube: Annotated[Text, Form(max_length=200)],
    value: Annotated[str, Form(pattern="^(positive|negative|invalid)$")],
    reason: Annotated[Text | None, Form(max_length=1000)] = None,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    try:
        out = results_service.enter_result(
            db,
            caller,
            services.ctx,
            tube_code=tube,
            value=value,
            reason=reason,
            remote_addr=remote_addr(request),
        )
    except HttpError as exc:
        db.rollback()
        if wants_json(request):
            return _refused(request, db, caller, exc)
        raise
    db.commit()
    if wants_json(request):
        return JSONResponse({"ok": True, **_tube_json(db, out.tube), "entry": out.status})
    return _redirect(f"/lab/tubes/{quote(out.tube.code, safe='')}?saved={out.status}")


@router.get("/lab/tubes/{code}")
def lab_tube(
    request: Request, caller: PageCaller, db: Db, services: Services, code: str
) -> Response:
    use_locale(request, db, caller)
    scope = caller.require(Permission.DATA_READ)
    tube = results_service.find_tube(db, scope, code)
    names = dict(db.execute(select(Organisation.id, Organisation.name)).all())
    users = dict(db.execute(select(User.id, User.username)).all())
    current = current_result(db, tube.id)
    people = results_service.members(db, tube.id)
    slips = {}
    if current is not None:
        slips = {p.id: f"/lab/slips/{current.id}/{p.id}" for _m, p in people}
    return render(
        request,
        "lab_tube.html",
        {
            "tube": tube,
            "people": people,
            "history": results_service.history(db, tube.id),
            "timeline": results_service.timeline(db, tube.id),
            "current": current,
            "names": names,
            "users": users,
            "slips": slips,
            "saved": request.query_params.get("saved"),
            "can_write": caller.can(Permission.RESULT_WRITE),
        },
    )


@router.post("/lab/tubes/{code}/correct")
def lab_tube_correct(
    request: Request,
    caller: PageCaller,
    db: Db,
    services: Services,
    code: str,
    value: Annotated[str, Form(pattern="^(positive|negative|invalid)$")],
    reason: Annotated[Text, Form(max_length=1000)] = "",
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    if not reason.strip():
        raise BadRequestError("a correction needs a reason", text="entry.reason_required")
    out = results_service.enter_result(
        db,
        caller,
        services.ctx,
        tube_code=code,
        value=value,
        reason=reason,
        remote_addr=remote_addr(request),
    )
    db.commit()
    return _redirect(f"/lab/tubes/{quote(out.tube.code, safe='')}?saved={out.status}")


# --- CSV import -----------------------------------------------------------------------------


@router.get("/lab/import")
def lab_import_page(request: Request, caller: PageCaller, db: Db) -> Response:
    use_locale(request, db, caller)
    caller.require(Permission.RESULT_WRITE)
    recent = db.scalars(
        select(ResultImport)
        .where(ResultImport.uploaded_by == caller.user_id)
        .order_by(ResultImport.id.desc())
        .limit(10)
    ).all()
    return render(request, "lab_import.html", {"outcome": None, "recent": recent, "fields": FIELDS})


@router.post("/lab/import")
def lab_import(
    request: Request,
    caller: PageCaller,
    db: Db,
    services: Services,
    action: Annotated[str, Form(pattern="^(check|apply)$")],
    file: Annotated[UploadFile | None, File()] = None,
    content_b64: Annotated[str | None, Form(max_length=20_000_000)] = None,
    filename: Annotated[Text | None, Form(max_length=255)] = None,
    map_tube: Annotated[Text, Form(max_length=200)] = "",
    map_result: Annotated[Text, Form(max_length=200)] = "",
    map_reported_at: Annotated[Text, Form(max_length=200)] = "",
    map_test_kind: Annotated[Text, Form(max_length=200)] = "",
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    # A plain ``def``: FastAPI runs it in its thread pool, so reading and checking a large file
    # never holds up the event loop that serves every other page and scanner field.
    check_form_csrf(caller, csrf_token)
    use_locale(request, db, caller)
    limit = services.config.lab.import_max_bytes
    if file is not None and file.filename:
        data = file.file.read(limit + 1)
        name = file.filename
    elif content_b64:
        try:
            data = base64.b64decode(content_b64, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError(
                "the file could not be read back; upload it again", text="import.err.read_back"
            ) from None
        name = filename or "results.csv"
    else:
        raise BadRequestError("choose a CSV file", text="import.err.no_file")
    if len(data) > limit:
        raise BadRequestError(
            f"the file is larger than {limit} bytes",
            text="import.err.too_large",
            values={"max": limit},
        )
    mapping = {
        "tube": map_tube,
        "result": map_result,
        "reported_at": map_reported_at,
        "test_kind": map_test_kind,
    }
    parsed = parse_results_csv(
        data, mapping={k: v for k, v in mapping.items() if v}, tz=services.tz
    )
    outcome = results_service.import_results(
        db,
        caller,
        services.ctx,
        parsed,
        filename=name,
        sha256=hashlib.sha256(data).hexdigest(),
        apply=action == "apply",
        remote_addr=remote_addr(request),
    )
    db.commit()
    return render(
        request,
        "lab_import.html",
        {
            "outcome": outcome,
            "action": action,
            "fields": FIELDS,
            "mapping": mapping,
            "content_b64": base64.b64encode(data).decode() if not outcome.applied else None,
            "filename": name,
            "recent": [],
        },
    )


# --- recall lists ---------------------------------------------------------------------------


RECALL_PAGE = 50
RECALL_DEFAULT_DAYS = 14
RECALL_MAX_DAYS = 92


@dataclass(frozen=True)
class RecallRange:
    """The local days whose positive pools the recall page and CSV show."""

    first: date
    last: date
    since: datetime
    until: datetime

    @property
    def query(self) -> str:
        return f"from={self.first.isoformat()}&to={self.last.isoformat()}"


def _recall_range(services: LabServices, first: str, last: str) -> RecallRange:
    """``from`` and ``to`` (local dates, both included); default the last two weeks. A range
    longer than ``RECALL_MAX_DAYS`` is refused rather than cut."""
    today = datetime.now(services.tz).date()

    def day(text: str, default: date) -> date:
        try:
            return date.fromisoformat(text) if text else default
        except ValueError:
            return default

    end = day(last, today)
    start = day(first, end - timedelta(days=RECALL_DEFAULT_DAYS - 1))
    if start > end:
        start, end = end, start
    if (end - start).days >= RECALL_MAX_DAYS:
        raise BadRequestError(
            f"choose at most {RECALL_MAX_DAYS} days",
            text="recall.err.range",
            values={"days": RECALL_MAX_DAYS},
        )
    since = datetime.combine(start, time(), services.tz)
    until = datetime.combine(end + timedelta(days=1), time(), services.tz)
    return RecallRange(start, end, since, until)


@router.get("/lab/recalls")
def lab_recalls(
    request: Request,
    caller: PageCaller,
    db: Db,
    services: Services,
    first: Annotated[str, Query(alias="from", max_length=10)] = "",
    last: Annotated[str, Query(alias="to", max_length=10)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """Positive pools of the chosen days (default the last two weeks), ``RECALL_PAGE`` a page,
    with how many there are in all; the CSV has every one of them."""
    use_locale(request, db, caller)
    scope = caller.require(Permission.DATA_READ)
    days = _recall_range(services, first, last)
    total = results_service.count_positive_pools(db, scope, since=days.since, until=days.until)
    pools = results_service.positive_pools(
        db,
        scope,
        since=days.since,
        until=days.until,
        limit=RECALL_PAGE,
        offset=(page - 1) * RECALL_PAGE,
    )
    return render(
        request,
        "lab_recalls.html",
        {
            "pools": pools,
            "single": None,
            "days": days,
            "total": total,
            "page": page,
            "page_size": RECALL_PAGE,
            "max_days": RECALL_MAX_DAYS,
        },
    )


@router.get("/lab/recalls.csv")
def lab_recalls_csv(
    request: Request,
    caller: PageCaller,
    db: Db,
    services: Services,
    first: Annotated[str, Query(alias="from", max_length=10)] = "",
    last: Annotated[str, Query(alias="to", max_length=10)] = "",
) -> Response:
    """Every positive pool of the chosen days (no page limit)."""
    days = _recall_range(services, first, last)
    pools = results_service.positive_pools(
        db,
        caller.require(Permission.DATA_READ),
        since=days.since,
        until=days.until,
        limit=None,
    )
    name = f"recall-lists-{days.first.isoformat()}-{days.last.isoformat()}.csv"
    return _csv(results_service.recall_csv(pools, language(request)), name)


@router.get("/lab/recalls/{code}")
def lab_recall(request: Request, caller: PageCaller, db: Db, code: str) -> Response:
    use_locale(request, db, caller)
    scope = caller.require(Permission.DATA_READ)
    if code.endswith(".csv"):
        pool = results_service.recall_list(db, scope, code[: -len(".csv")])
        return _csv(
            results_service.recall_csv([pool], language(request)), f"recall-{pool.tube.code}.csv"
        )
    pool = results_service.recall_list(db, scope, code)
    return render(
        request, "lab_recalls.html", {"pools": [pool], "single": pool, "days": None, "total": 1}
    )


def _csv(content: bytes, name: str) -> Response:
    return Response(
        content,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- slips ----------------------------------------------------------------------------------


@router.get("/lab/slips/{result_id}/{person_id}")
def lab_slip(
    request: Request,
    caller: PageCaller,
    db: Db,
    services: Services,
    result_id: int,
    person_id: int,
) -> Response:
    use_locale(request, db, caller)
    scope = caller.require(Permission.DATA_READ)
    result = db.get(Result, result_id)
    if result is None:
        raise NotFoundError("no such result", text="lab.err.no_slip")
    tube = db.get(Tube, result.tube_id)
    assert tube is not None
    results_service.find_tube(db, scope, tube.code)
    member = db.scalar(
        select(PoolMember.id).where(
            PoolMember.tube_id == tube.id,
            PoolMember.person_id == person_id,
            PoolMember.undone_at.is_(None),
        )
    )
    if member is None or db.get(Person, person_id) is None:
        raise NotFoundError("no such person in this tube", text="lab.err.no_slip")
    token = services.ctx.signer.sign(SlipRef(result_id, person_id))
    slip = load_slip(db, services.ctx.signer, token)
    assert slip is not None
    verify = f"{base_url(request, services)}/v/{token}"
    return render(
        request,
        "slip_page.html",
        {"slips": [(slip, verify, qr_svg(verify))], "printed": datetime.now(services.tz)},
    )


# --- notification log -----------------------------------------------------------------------


@router.get("/lab/notifications")
def lab_notifications(request: Request, caller: PageCaller, db: Db) -> Response:
    """The outgoing notifications and every delivery attempt (province-wide admins only: the
    messages carry personal data from every facility)."""
    use_locale(request, db, caller)
    if not caller.require(Permission.AUDIT_READ).includes_unassigned:
        raise NotFoundError(
            "the notification log is for province-wide administrators",
            text="lab.err.notifications_admin",
        )
    since = datetime.now(UTC) - timedelta(days=7)
    notes = db.scalars(
        select(Notification)
        .where(Notification.created_at >= since)
        .order_by(Notification.id.desc())
        .limit(200)
    ).all()
    attempts: dict[int, list[NotificationDelivery]] = {}
    if notes:
        for d in db.scalars(
            select(NotificationDelivery)
            .where(NotificationDelivery.notification_id.in_([n.id for n in notes]))
            .order_by(NotificationDelivery.id)
        ):
            attempts.setdefault(d.notification_id, []).append(d)
    return render(request, "lab_notifications.html", {"notes": notes, "attempts": attempts})
