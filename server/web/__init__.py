"""The web app and JSON API (FastAPI). Server-rendered pages, no JavaScript build.

Layout, for whoever adds routes (lab, reports, ops, enrollment):

- ``deps``: ``Db``, ``Caller`` (API: bearer token or session + CSRF), ``PageCaller`` (pages),
  ``check_form_csrf``, ``remote_addr``;
- ``server.access``: ``Permission``, ``Principal.require(...)`` -> ``Scope`` with ``filter``;
- ``server.audit.audit`` for every write; ``server.errors.HttpError`` subclasses for refusals;
- ``templating.render`` and ``templates/base.html`` for pages, ``i18n.TEXTS`` for their text;
- add a router module and include it in ``create_app`` below.

Public without login: ``/healthz``, ``/login``, ``/openapi.json``, ``/docs``, and the pages for
citizens: ``/lookup``, ``/v/{token}`` (slip verification), ``/declare``. Everything else
needs a session or an API token (``docs/server.md``: "Accounts and access", "API").
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.responses import Response

from server import __version__
from server.access import Permission
from server.config import ServerConfig
from server.enrollment import EnrollmentService
from server.errors import HttpError
from server.metrics import IngestCollector, SharedCounters
from server.ops.metrics import FleetCollector, HttpMetrics
from server.web import (
    api_admin,
    api_auth,
    api_data,
    api_enrollment,
    api_lab,
    enrollment_pages,
    lab_pages,
    ops,
    pages,
    public_pages,
    report_pages,
    services,
)
from server.web.deps import Caller
from server.web.i18n import error_message, translate
from server.web.templating import language, render

_API_PREFIXES = ("/api/", "/metrics", "/healthz", "/openapi.json", "/docs")


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith(_API_PREFIXES)


async def http_error(request: Request, exc: Exception) -> Response:
    """The one place a refused request is rendered: JSON for the API, a page for people."""
    assert isinstance(exc, HttpError)
    if wants_html(request):
        if exc.status == 401:
            return pages.login_redirect(request)
        text, detail = error_message(language(request), exc)
        return render(
            request,
            "error.html",
            {"status": exc.status, "message": text, "detail": detail},
            status_code=exc.status,
        )
    return JSONResponse(
        {"detail": exc.message, "code": exc.code}, status_code=exc.status, headers=exc.headers
    )


async def invalid_request(request: Request, exc: Exception) -> Response:
    """A form field too long or malformed: a page in the reader's language for people (such a
    form was sent around the page's own limits), FastAPI's 422 JSON for the API."""
    assert isinstance(exc, RequestValidationError)
    if wants_html(request):
        return render(
            request,
            "error.html",
            {"status": 422, "message": translate(language(request), "error.status.422")},
            status_code=422,
        )
    return await request_validation_exception_handler(request, exc)


def create_app(
    engine: Engine,
    *,
    config: ServerConfig | None = None,
    ingest_counters: SharedCounters | None = None,
    enrollment: EnrollmentService | None = None,
    ops_runtime: Any = None,
) -> FastAPI:
    """Build the web app on ``engine``; with ``enrollment`` (broker
    admin and endpoint) it enrolls stations, without it the enrollment routes answer 404."""
    app = FastAPI(
        title="Swabline",
        version=__version__,
        description="Central server of Swabline: stations, organisations, users, and search "
        "over persons, tubes, pools and samples. Authenticate with a bearer API token or the "
        "web session cookie (plus X-CSRF-Token on unsafe methods).",
    )
    app.state.engine = engine
    app.state.config = config or ServerConfig()
    app.state.enrollment = enrollment
    registry = CollectorRegistry(auto_describe=True)
    if ingest_counters is not None:
        registry.register(IngestCollector(ingest_counters))
    registry.register(FleetCollector(engine, app.state.config))
    HttpMetrics(registry).install(app)
    app.state.metrics_registry = registry
    app.state.ops = ops_runtime  # server.ops.runtime.OpsRuntime: commands go out through it
    if ops_runtime is not None:
        app.state.ops_fleet_cache = ops_runtime.fleet_cache
    app.add_exception_handler(HttpError, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.include_router(api_auth.router)
    app.include_router(api_admin.router)
    app.include_router(api_data.router)
    app.include_router(pages.router)
    services.install(app, engine, app.state.config)
    app.include_router(api_lab.router)
    app.include_router(lab_pages.router)
    app.include_router(report_pages.router)
    app.include_router(public_pages.router)
    app.include_router(api_enrollment.router)
    app.include_router(enrollment_pages.router)
    app.include_router(ops.api)
    app.include_router(ops.pages)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness and database reachability (no login needed, no data)."""
        with Session(engine) as s:
            s.execute(select(1))
        return {"status": "ok"}

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    def metrics(caller: Caller) -> Any:
        """Prometheus metrics: ingest counters per worker, the fleet (bounded per-station series,
        per-facility and fleet totals), alerts, commands, webhooks, HTTP. Needs ``station.read``."""
        caller.require(Permission.STATION_READ)
        return Response(generate_latest(app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
