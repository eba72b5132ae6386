"""``/api/enroll`` (public: the token is the credential) and the enrollment administration API.

Creating, listing and cancelling tokens, printing a card and decommissioning need
``station.write`` with a scope that covers the facility (403 without the permission, 404 for a
facility, token or station outside the scope). Every route answers 404 when the server has no
``[enrollment]`` section (``app.state.enrollment`` is None).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from protocol.cards import CardError, EnrollmentCard
from protocol.enrollment import ENROLL_PATH, BrokerCredentials, EnrollRequest, EnrollResponse
from protocol.topics import STATION_ID_PATTERN
from server import enrollment
from server.cards import enrollment_card_html
from server.enrollment import EnrollmentService
from server.errors import BadRequestError, NotFoundError
from server.web.deps import Caller, Db, remote_addr
from server.web.schemas import Id, OrgIdQuery, PathId, Problem, StationIdPath, Text

NO_STORE = {"Cache-Control": "no-store"}
"""Answers that carry a live token or credentials are not kept by browsers or proxies."""

router = APIRouter(tags=["enrollment"])
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem} for s in (400, 401, 403, 404, 409, 410, 503)
}
_REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": what}
    for status, what in {
        401: "unknown token (mistyped, forged, or from another server)",
        404: "the server does not enroll stations (no [enrollment] section)",
        409: "token already used",
        410: "token expired or cancelled, or station decommissioned",
        503: "the broker could not be reached; the token was not used",
    }.items()
}


def _service(request: Request) -> EnrollmentService:
    service: EnrollmentService | None = getattr(request.app.state, "enrollment", None)
    if service is None:
        raise NotFoundError("this server does not enroll stations (no [enrollment] section)")
    return service


Service = Annotated[EnrollmentService, Depends(_service)]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    facility_id: Id | None = Field(
        None, description="Sampling facility; may be left out when re-provisioning."
    )
    station_id: Annotated[str, Field(pattern=f"^{STATION_ID_PATTERN}$")] | None = Field(
        None, description="Re-provision this enrolled station (it keeps its id)."
    )
    station_name: Annotated[Text, Field(min_length=1, max_length=200)] | None = Field(
        None, description="Name of the station in the registry (default: facility name + number)."
    )
    expires_in_s: int = Field(7200, ge=60, le=366 * 86400)


class TokenOut(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored.")
    id: int
    facility_id: int
    facility_code: str
    station_id: str | None
    station_name: str | None
    expires_at: datetime


class TokenListed(BaseModel):
    id: int
    facility_id: int
    facility_code: str
    facility_name: str
    station_id: str | None
    station_name: str | None
    created_at: datetime
    expires_at: datetime
    created_by: str
    used_at: datetime | None
    used_by_station: str | None
    cancelled_at: datetime | None
    state: str = Field(description="outstanding, used, cancelled or expired")


class CardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_url: Annotated[Text, Field(max_length=300)]
    token: Annotated[Text, Field(min_length=16, max_length=128)]
    wifi_ssid: Annotated[Text, Field(max_length=32)] | None = None
    wifi_password: Annotated[Text, Field(max_length=63)] | None = None


def _listed(t: enrollment.TokenInfo) -> TokenListed:
    return TokenListed.model_validate(t, from_attributes=True)


@router.post(ENROLL_PATH, responses=_REFUSALS)
async def api_enroll(
    body: EnrollRequest, request: Request, response: Response, service: Service
) -> EnrollResponse:
    """Trade a single-use enrollment token for a station id and MQTT credentials."""
    response.headers.update(NO_STORE)
    done = await run_in_threadpool(
        enrollment.enroll,
        request.app.state.engine,
        service.broker_admin,
        token=body.token,
        hostname=body.hostname,
        remote_addr=remote_addr(request),
    )
    return EnrollResponse(
        station_id=done.station_id,
        facility=done.facility,
        mqtt=BrokerCredentials(
            host=service.endpoint.host,
            port=service.endpoint.port,
            username=done.station_id,
            password=done.mqtt_password,
            ca_pem=service.endpoint.ca_pem,
        ),
        seq_floor=done.seq_floor,
        server_time=time.time(),
    )


@router.post("/api/enrollment-tokens", status_code=201, responses=ERRORS)
def api_create_token(
    body: TokenRequest,
    caller: Caller,
    db: Db,
    request: Request,
    response: Response,
    service: Service,
) -> TokenOut:
    """Create a single-use enrollment token for a sampling facility in your scope (shown once)."""
    facility = None
    if body.facility_id is not None:
        facility = enrollment.sampling_facility(db, caller, facility_id=body.facility_id)
    issued = enrollment.create_token(
        db,
        caller,
        facility=facility,
        lifetime=timedelta(seconds=body.expires_in_s),
        max_lifetime=service.max_token_lifetime,
        station_id=body.station_id,
        station_name=body.station_name,
        remote_addr=remote_addr(request),
    )
    db.commit()
    response.headers.update(NO_STORE)
    return TokenOut(
        token=issued.token,
        id=issued.id,
        facility_id=issued.facility_id,
        facility_code=issued.facility_code,
        station_id=issued.station_id,
        station_name=issued.station_name,
        expires_at=issued.expires_at,
    )


@router.get("/api/enrollment-tokens", responses=ERRORS)
def api_list_tokens(
    caller: Caller,
    db: Db,
    _service: Service,
    facility_id: OrgIdQuery = None,
    outstanding: Annotated[bool, Query(description="Only tokens still usable.")] = False,
) -> list[TokenListed]:
    """Recent enrollment tokens of facilities in your scope and what became of them (never
    their text)."""
    return [
        _listed(t)
        for t in enrollment.list_tokens(
            db, caller, outstanding=outstanding, facility_id=facility_id
        )
    ]


@router.post("/api/enrollment-tokens/{token_id}/cancel", responses=ERRORS)
def api_cancel_token(
    token_id: PathId, caller: Caller, db: Db, request: Request, _service: Service
) -> TokenListed:
    """Cancel an unused token (a lost card): it can no longer enroll a station."""
    info = enrollment.cancel_token(db, caller, token_id, remote_addr=remote_addr(request))
    db.commit()
    return _listed(info)


@router.post(
    "/api/enrollment-cards",
    response_class=HTMLResponse,
    responses={**ERRORS, 200: {"content": {"text/html": {}}}},
)
def api_card(body: CardRequest, caller: Caller, db: Db, _service: Service) -> HTMLResponse:
    """A printable enrollment card (HTML page with the QR code) for a usable token in scope."""
    try:
        card = EnrollmentCard(body.server_url, body.token, body.wifi_ssid, body.wifi_password)
        card.encode()
    except CardError as exc:
        raise BadRequestError(exc.reason) from None
    info = enrollment.usable_token(db, caller, body.token)
    return HTMLResponse(
        enrollment_card_html(
            card,
            facility=f"{info.facility_name} ({info.facility_code})",
            expires_at=info.expires_at,
        ),
        headers=NO_STORE,
    )


@router.post("/api/stations/{station_id}/decommission", status_code=204, responses=ERRORS)
def api_decommission(
    station_id: StationIdPath, caller: Caller, db: Db, request: Request, service: Service
) -> None:
    """Revoke a station: the broker refuses its credentials at once; it becomes inactive and its
    unused tokens are cancelled."""
    enrollment.decommission(
        db, caller, service.broker_admin, station_id, remote_addr=remote_addr(request)
    )
    db.commit()
