"""Server-rendered pages: login, dashboard, organisations, users, search.

Pages reuse the API's scoped queries, so a page never shows more than the API would.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import func, select
from starlette.responses import Response

from server.access import Permission
from server.auth import SESSION_COOKIE, login, revoke
from server.errors import NotAuthenticatedError, TooManyRequestsError
from server.models import Organisation, RejectedMessage, User
from server.web import api_admin, api_data
from server.web.api_auth import set_session_cookie
from server.web.deps import Config, Db, PageCaller, check_form_csrf, remote_addr
from server.web.schemas import Text
from server.web.templating import render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only local paths, never another site (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
def login_submit(
    request: Request,
    db: Db,
    config: Config,
    username: Annotated[Text, Form(max_length=64)],
    password: Annotated[Text, Form(max_length=256)],
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    try:
        _user, issued = login(db, username, password, remote_addr(request), config.auth)
    except (NotAuthenticatedError, TooManyRequestsError) as exc:
        key = "login.limited" if isinstance(exc, TooManyRequestsError) else "login.failed"
        return render(
            request,
            "login.html",
            {"next": _safe_next(next), "error": key, "username": username},
            status_code=exc.status,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    set_session_cookie(response, issued.secret, config)
    return response


@router.post("/logout")
def logout(
    caller: PageCaller,
    db: Db,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    if caller.token_id is not None:
        revoke(db, caller.token_id)
        db.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def dashboard(request: Request, caller: PageCaller, db: Db) -> Response:
    _locale(request, db, caller.user_id)
    stations = api_admin.list_stations(caller, db) if caller.can(Permission.STATION_READ) else []
    records = api_data.api_records(caller, db, limit=30) if caller.can(Permission.DATA_READ) else []
    shown = {s.facility_id for s in stations if s.facility_id is not None}
    names = select(Organisation.id, Organisation.name).where(Organisation.id.in_(shown))
    facilities = {org_id: name for org_id, name in db.execute(names)}
    rejected = None
    if caller.scope(Permission.STATION_READ).includes_unassigned:
        rejected = db.scalar(select(func.count()).select_from(RejectedMessage)) or 0
    return render(
        request,
        "index.html",
        {"stations": stations, "records": records, "rejected": rejected, "facilities": facilities},
    )


@router.get("/organisations")
def organisations_page(
    request: Request, caller: PageCaller, db: Db, page: Annotated[int, Query(ge=1, le=100_000)] = 1
) -> Response:
    _locale(request, db, caller.user_id)
    result = api_admin.list_organisations(caller, db, page=page, page_size=100)
    return render(request, "organisations.html", {"result": result})


@router.get("/users")
def users_page(
    request: Request, caller: PageCaller, db: Db, page: Annotated[int, Query(ge=1, le=100_000)] = 1
) -> Response:
    _locale(request, db, caller.user_id)
    result = api_admin.list_users(caller, db, page=page, page_size=100)
    return render(request, "users.html", {"result": result})


@router.get("/search")
def search_page(
    request: Request,
    caller: PageCaller,
    db: Db,
    q: Annotated[Text | None, Query(max_length=100)] = None,
) -> Response:
    _locale(request, db, caller.user_id)
    persons = tubes = None
    if q:
        persons = api_data.search_persons(caller, db, q=q, page=1, page_size=50)
        tubes = api_data.search_tubes(caller, db, q=q, page=1, page_size=50)
    return render(request, "search.html", {"q": q or "", "persons": persons, "tubes": tubes})


def _locale(request: Request, db: Db, user_id: int | None) -> None:
    if user_id is not None:
        request.state.locale = db.scalar(select(User.locale).where(User.id == user_id))


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
