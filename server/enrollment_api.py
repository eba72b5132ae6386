"""HTTP routes of enrollment (FastAPI router), kept apart from the rest of the web app.

``POST /api/enroll`` is public: the enrollment token is the credential. The admin routes
(create and list tokens, print a card, decommission a station) are mounted only with a
``require_admin`` dependency, which the web app's authentication provides; without one they do
not exist (the CLI ``swabline admin ...`` does the same work on the server itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from protocol.cards import CardError, EnrollmentCard
from protocol.enrollment import ENROLL_PATH, BrokerCredentials, EnrollRequest, EnrollResponse
from server.broker_admin import DynsecBrokerAdmin
from server.cards import enrollment_card_html
from server.config import EnrollmentConfig, ServerConfig
from server.enrollment import (
    BrokerAdminFactory,
    EnrollmentRefused,
    create_token,
    decommission,
    enroll,
    list_tokens,
)
from server.errors import ConfigError

_REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"description": what}
    for status, what in {
        401: "unknown token (mistyped, forged, or from another server)",
        409: "token already used",
        410: "token expired or cancelled, or station decommissioned",
        503: "the broker could not be reached; the token was not used",
    }.items()
}


class BrokerEndpoint(BaseModel):
    """Where enrolled stations connect, and the CA they must trust."""

    model_config = ConfigDict(frozen=True)

    host: str
    port: int
    ca_pem: str | None


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    facility: str = Field(min_length=1, max_length=40)
    expires_in_s: int = Field(7200, ge=60)
    station_id: str | None = Field(None, description="Re-provision this station.")


class TokenOut(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored.")
    facility: str
    station_id: str | None
    expires_at: datetime


class TokenListed(BaseModel):
    id: int
    facility: str
    station_id: str | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_station: str | None
    cancelled_at: datetime | None


class CardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_url: str
    token: str
    wifi_ssid: str | None = None
    wifi_password: str | None = None


def _refused(exc: EnrollmentRefused) -> HTTPException:
    return HTTPException(status_code=exc.status, detail=exc.reason)


def enrollment_router(
    *,
    engine: Engine,
    broker_admin: BrokerAdminFactory,
    endpoint: BrokerEndpoint,
    max_token_lifetime_s: int = 7 * 24 * 3600,
    require_admin: Callable[..., Any] | None = None,
) -> APIRouter:
    """Routes of enrollment; admin routes only when ``require_admin`` is given."""
    router = APIRouter(tags=["enrollment"])

    @router.post(ENROLL_PATH, responses=_REFUSALS)
    async def api_enroll(body: EnrollRequest) -> EnrollResponse:
        """Trade a single-use enrollment token for a station id and MQTT credentials."""
        try:
            done = await run_in_threadpool(
                enroll, engine, broker_admin, token=body.token, hostname=body.hostname
            )
        except EnrollmentRefused as exc:
            raise _refused(exc) from None
        return EnrollResponse(
            station_id=done.station_id,
            facility=done.facility,
            mqtt=BrokerCredentials(
                host=endpoint.host,
                port=endpoint.port,
                username=done.station_id,
                password=done.mqtt_password,
                ca_pem=endpoint.ca_pem,
            ),
            seq_floor=done.seq_floor,
            server_time=time.time(),
        )

    if require_admin is None:
        return router
    admin = [Depends(require_admin)]

    @router.post("/api/enrollment-tokens", dependencies=admin, status_code=201)
    def api_create_token(body: TokenRequest, request: Request) -> TokenOut:
        """Create a single-use enrollment token (shown once)."""
        try:
            issued = create_token(
                engine,
                facility=body.facility,
                lifetime=timedelta(seconds=body.expires_in_s),
                max_lifetime=timedelta(seconds=max_token_lifetime_s),
                station_id=body.station_id,
                created_by=getattr(request.state, "username", None),
            )
        except EnrollmentRefused as exc:
            raise _refused(exc) from None
        return TokenOut(**asdict(issued))

    @router.get("/api/enrollment-tokens", dependencies=admin)
    def api_list_tokens() -> list[TokenListed]:
        """Recent enrollment tokens and what became of them (never their text)."""
        return [TokenListed(**asdict(t)) for t in list_tokens(engine)]

    @router.post("/api/enrollment-cards", dependencies=admin, response_class=HTMLResponse)
    def api_card(body: CardRequest) -> HTMLResponse:
        """A printable enrollment card (HTML page with the QR code)."""
        try:
            card = EnrollmentCard(body.server_url, body.token, body.wifi_ssid, body.wifi_password)
            return HTMLResponse(enrollment_card_html(card))
        except CardError as exc:
            raise HTTPException(status_code=400, detail=exc.reason) from None

    @router.post("/api/stations/{station_id}/decommission", dependencies=admin, status_code=204)
    def api_decommission(station_id: str) -> None:
        """Revoke a station: the broker refuses its credentials at once."""
        try:
            decommission(engine, broker_admin, station_id)
        except EnrollmentRefused as exc:
            raise _refused(exc) from None

    return router


def broker_admin_from_config(config: ServerConfig) -> BrokerAdminFactory:
    """Connections as the broker admin, over the server's own (loopback) broker listener."""
    settings = _enrollment_settings(config)
    password = _read(settings.broker_admin_password_file, "enrollment.broker_admin_password_file")

    def connect() -> DynsecBrokerAdmin:
        return DynsecBrokerAdmin(
            host=config.mqtt.host,
            port=config.mqtt.port,
            username=settings.broker_admin_username,
            password=password,
        )

    return connect


def router_from_config(
    config: ServerConfig, engine: Engine, *, require_admin: Callable[..., Any] | None = None
) -> APIRouter:
    """The enrollment routes as the server's configuration describes them."""
    settings = _enrollment_settings(config)
    ca_pem = _read(settings.ca_file, "enrollment.ca_file") if settings.ca_file else None
    return enrollment_router(
        engine=engine,
        broker_admin=broker_admin_from_config(config),
        endpoint=BrokerEndpoint(
            host=settings.broker_host, port=settings.broker_port, ca_pem=ca_pem
        ),
        max_token_lifetime_s=settings.max_token_lifetime_s,
        require_admin=require_admin,
    )


def _enrollment_settings(config: ServerConfig) -> EnrollmentConfig:
    if config.enrollment is None:
        raise ConfigError("enrollment: the [enrollment] section is missing")
    return config.enrollment


def _read(path: Path, key: str) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{key}: {path} is empty")
    return text
