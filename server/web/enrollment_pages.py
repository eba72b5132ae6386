"""The enrollment page for technicians and admins (server-rendered, Vietnamese first).

``/enrollment`` lists the sampling facilities in the caller's ``station.write`` scope, the
outstanding tokens and the enrolled stations; its form creates a token (a new station, or
re-provisioning one) and answers with the token, shown once, and the printable enrollment card.
Tokens are cancelled and stations decommissioned (after a confirmation page) with CSRF-checked
forms. The page exists only when the server enrolls stations (an ``[enrollment]`` section).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from starlette.responses import Response

from protocol.cards import CardError, EnrollmentCard
from protocol.topics import STATION_ID_PATTERN
from server import enrollment
from server.access import Permission, Principal
from server.cards import CARD_CSS, enrollment_card_fragment
from server.enrollment import EnrollmentService
from server.errors import BadRequestError, NotFoundError
from server.models import User
from server.web.deps import Db, PageCaller, check_form_csrf, remote_addr
from server.web.i18n import TEXTS
from server.web.schemas import MAX_ID, OrgIdQuery, PathId, StationIdPath, Text
from server.web.templating import render

router = APIRouter(include_in_schema=False)

LIFETIMES: dict[str, timedelta] = {
    "30m": timedelta(minutes=30),
    "2h": timedelta(hours=2),
    "8h": timedelta(hours=8),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
}
DEFAULT_LIFETIME = "2h"

# The page's texts join the shared table (kept here, next to the page, so that pages built in
# parallel do not all edit the same lines of i18n.py).
TEXTS.update(
    {
        "nav.enrollment": ("Đăng ký trạm", "Station enrollment"),
        "enroll.title": ("Đăng ký trạm quét", "Station enrollment"),
        "enroll.new.title": ("Tạo mã đăng ký cho trạm mới", "New enrollment token"),
        "enroll.reprovision.title": ("Cấp lại thông tin đăng nhập cho trạm", "Re-provision"),
        "enroll.reprovision.help": (
            "Trạm giữ nguyên mã trạm. Khi mã đăng ký được dùng, mật khẩu cũ của trạm bị vô "
            "hiệu ngay lập tức.",
            "The station keeps its id. When the token is used, its old password stops working "
            "at once.",
        ),
        "enroll.facility": ("Cơ sở lấy mẫu", "Sampling facility"),
        "enroll.station_name": ("Tên trạm (không bắt buộc)", "Station name (optional)"),
        "enroll.station_name.hint": ("vd. Bàn 3 - cổng trường", "e.g. Desk 3 - school gate"),
        "enroll.lifetime": ("Hiệu lực", "Valid for"),
        "enroll.lifetime.30m": ("30 phút", "30 minutes"),
        "enroll.lifetime.2h": ("2 giờ", "2 hours"),
        "enroll.lifetime.8h": ("8 giờ", "8 hours"),
        "enroll.lifetime.1d": ("1 ngày", "1 day"),
        "enroll.lifetime.7d": ("7 ngày", "7 days"),
        "enroll.server_url": ("Địa chỉ máy chủ (in trên thẻ)", "Server address (on the card)"),
        "enroll.wifi": ("Wi-Fi cho trạm (không bắt buộc)", "Wi-Fi for the station (optional)"),
        "enroll.wifi_ssid": ("Tên mạng (SSID)", "Network name (SSID)"),
        "enroll.wifi_password": ("Mật khẩu Wi-Fi", "Wi-Fi password"),
        "enroll.create": ("Tạo mã và thẻ đăng ký", "Create token and card"),
        "enroll.no_facilities": (
            "Không có cơ sở lấy mẫu nào trong phạm vi của bạn.",
            "There is no sampling facility in your scope.",
        ),
        "enroll.facilities": ("Cơ sở lấy mẫu", "Sampling facilities"),
        "enroll.district": ("Trực thuộc", "Under"),
        "enroll.prefix": ("Mã trạm", "Station ids"),
        "enroll.active_stations": ("Trạm đang hoạt động", "Active stations"),
        "enroll.outstanding": ("Mã chưa dùng", "Unused tokens"),
        "enroll.tokens": ("Mã đăng ký chưa dùng", "Outstanding tokens"),
        "enroll.tokens.none": ("Không có mã nào đang chờ.", "No outstanding token."),
        "enroll.for": ("Dùng cho", "For"),
        "enroll.for.new": ("trạm mới", "a new station"),
        "enroll.for.reprovision": ("cấp lại", "re-provisioning"),
        "enroll.created_by": ("Người tạo", "Created by"),
        "enroll.created_at": ("Tạo lúc", "Created"),
        "enroll.expires_at": ("Hết hạn", "Expires"),
        "enroll.cancel_token": ("Hủy mã", "Cancel token"),
        "enroll.stations": ("Trạm đã đăng ký", "Enrolled stations"),
        "enroll.stations.none": ("Chưa có trạm nào được đăng ký.", "No station enrolled yet."),
        "enroll.enrolled_at": ("Đăng ký lúc", "Enrolled"),
        "enroll.credentials": ("Cấp mật khẩu lần", "Credentials issued"),
        "enroll.status": ("Tình trạng", "Status"),
        "enroll.status.active": ("đang hoạt động", "active"),
        "enroll.status.inactive": ("tạm ngừng", "inactive"),
        "enroll.status.decommissioned": ("đã thu hồi", "decommissioned"),
        "enroll.actions": ("Thao tác", "Actions"),
        "enroll.reprovision": ("Cấp lại", "Re-provision"),
        "enroll.decommission": ("Thu hồi", "Decommission"),
        "enroll.done.cancelled": ("Đã hủy mã đăng ký.", "The token was cancelled."),
        "enroll.done.decommissioned": ("Đã thu hồi trạm", "Decommissioned station"),
        "enroll.token.title": ("Mã đăng ký đã được tạo", "Enrollment token created"),
        "enroll.token.once": (
            "Mã này chỉ hiển thị một lần và chỉ dùng được một lần. In thẻ ngay, giữ bí mật và "
            "hủy thẻ sau khi dùng.",
            "This token is shown only once and works only once. Print the card now, keep it "
            "secret and destroy it once used.",
        ),
        "enroll.token.text": ("Mã đăng ký", "Token"),
        "enroll.token.command": (
            "Hoặc gõ trên trạm (có bàn phím hoặc SSH):",
            "Or type on the station (keyboard or SSH):",
        ),
        "enroll.token.print": ("In thẻ", "Print the card"),
        "enroll.back": ("Quay lại trang đăng ký trạm", "Back to station enrollment"),
        "enroll.decommission.title": ("Thu hồi trạm", "Decommission station"),
        "enroll.decommission.warning": (
            "Máy chủ MQTT sẽ từ chối thông tin đăng nhập của trạm ngay lập tức và ngắt kết nối "
            "của trạm. Các mã đăng ký chưa dùng của trạm bị hủy. Không thể cấp lại trạm đã thu "
            "hồi: hãy đăng ký một trạm mới. Dữ liệu đã gửi vẫn được giữ.",
            "The broker refuses the station's credentials at once and closes its connection. "
            "Its unused tokens are cancelled. A decommissioned station cannot be re-provisioned: "
            "enroll a new one instead. Its records stay in the database.",
        ),
        "enroll.decommission.confirm": ("Xác nhận thu hồi", "Yes, decommission"),
        "enroll.decommission.already": (
            "Trạm này đã được thu hồi.",
            "This station is already decommissioned.",
        ),
        "enroll.hostname": ("Tên máy", "Hostname"),
        "enroll.cancel": ("Hủy bỏ", "Cancel"),
    }
)


def _service(request: Request) -> EnrollmentService:
    service: EnrollmentService | None = getattr(request.app.state, "enrollment", None)
    if service is None:
        raise NotFoundError("this server does not enroll stations (no [enrollment] section)")
    return service


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _setup(request: Request, db: Db, caller: Principal) -> EnrollmentService:
    if caller.user_id is not None:
        request.state.locale = db.scalar(select(User.locale).where(User.id == caller.user_id))
    caller.require(Permission.STATION_WRITE)
    return _service(request)


def _lifetimes(service: EnrollmentService) -> list[str]:
    return [k for k, v in LIFETIMES.items() if v <= service.max_token_lifetime]


def _page(
    request: Request,
    db: Db,
    caller: Principal,
    service: EnrollmentService,
    *,
    station: str | None = None,
    facility_id: int | None = None,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    reprovision = None
    if station is not None:
        reprovision = _station(db, caller, station)
        if reprovision.decommissioned_at is not None:
            raise NotFoundError(f"station {station!r} is decommissioned")
    return render(
        request,
        "enrollment.html",
        {
            "facilities": enrollment.facilities(db, caller),
            "tokens": enrollment.list_tokens(db, caller, outstanding=True),
            "stations": enrollment.enrolled_stations(db, caller),
            "reprovision": reprovision,
            "selected_facility": facility_id,
            "lifetimes": _lifetimes(service),
            "default_lifetime": DEFAULT_LIFETIME,
            "server_url": str(request.base_url).rstrip("/"),
            "form": form or {},
            "error": error,
            "decommissioned": request.query_params.get("decommissioned"),
            "cancelled": request.query_params.get("cancelled"),
            "when": _when,
        },
        status_code=status_code,
    )


@router.get("/enrollment")
def enrollment_page(
    request: Request,
    caller: PageCaller,
    db: Db,
    station: Annotated[str | None, Query(pattern=f"^{STATION_ID_PATTERN}$")] = None,
    facility_id: OrgIdQuery = None,
) -> Response:
    service = _setup(request, db, caller)
    return _page(request, db, caller, service, station=station, facility_id=facility_id)


def _optional(value: str) -> str | None:
    value = value.strip()
    return value or None


@router.post("/enrollment/tokens")
def enrollment_create_token(
    request: Request,
    caller: PageCaller,
    db: Db,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
    facility_id: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
    station_id: Annotated[str | None, Form(pattern=f"^{STATION_ID_PATTERN}$")] = None,
    station_name: Annotated[Text, Form(max_length=200)] = "",
    lifetime: Annotated[str, Form(max_length=8)] = DEFAULT_LIFETIME,
    server_url: Annotated[Text, Form(max_length=300)] = "",
    wifi_ssid: Annotated[Text, Form(max_length=32)] = "",
    wifi_password: Annotated[Text, Form(max_length=63)] = "",
) -> Response:
    check_form_csrf(caller, csrf_token)
    service = _setup(request, db, caller)
    if lifetime not in _lifetimes(service):
        raise BadRequestError(f"lifetime {lifetime!r} is not offered")
    ssid, psk = _optional(wifi_ssid), wifi_password or None
    url = server_url.strip()
    try:  # check what goes on the card before a token is made
        EnrollmentCard(url, "x" * 24, ssid, psk).encode()
    except CardError as exc:
        form = {"station_name": station_name, "server_url": url, "wifi_ssid": wifi_ssid}
        return _page(
            request,
            db,
            caller,
            service,
            station=station_id,
            facility_id=facility_id,
            error=exc.reason,
            form=form,
            status_code=400,
        )
    facility = None
    if facility_id is not None and station_id is None:
        facility = enrollment.sampling_facility(db, caller, facility_id=facility_id)
    issued = enrollment.create_token(
        db,
        caller,
        facility=facility,
        lifetime=LIFETIMES[lifetime],
        max_lifetime=service.max_token_lifetime,
        station_id=station_id,
        station_name=_optional(station_name),
        remote_addr=remote_addr(request),
    )
    db.commit()
    card = EnrollmentCard(url, issued.token, ssid, psk)
    response = render(
        request,
        "enrollment_token.html",
        {
            "issued": issued,
            "server_url": url,
            "wifi_ssid": ssid,
            "expires": _when(issued.expires_at),
            "card_css": CARD_CSS,
            "card_html": enrollment_card_fragment(
                card,
                facility=f"{issued.facility_name} ({issued.facility_code})",
                expires_at=issued.expires_at,
                station_id=issued.station_id,
            ),
        },
        status_code=201,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/enrollment/tokens/{token_id}/cancel")
def enrollment_cancel_token(
    request: Request,
    token_id: PathId,
    caller: PageCaller,
    db: Db,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    _setup(request, db, caller)
    enrollment.cancel_token(db, caller, token_id, remote_addr=remote_addr(request))
    db.commit()
    return RedirectResponse(f"/enrollment?cancelled={token_id}", status_code=303)


def _station(db: Db, caller: Principal, station_id: str) -> enrollment.EnrolledStation:
    found = enrollment.enrolled_stations(db, caller, station_id=station_id)
    if not found:
        raise NotFoundError(f"no enrolled station {station_id!r}")
    return found[0]


@router.get("/enrollment/stations/{station_id}/decommission")
def enrollment_decommission_page(
    request: Request, station_id: StationIdPath, caller: PageCaller, db: Db
) -> Response:
    _setup(request, db, caller)
    return render(
        request,
        "enrollment_decommission.html",
        {"station": _station(db, caller, station_id), "when": _when},
    )


@router.post("/enrollment/stations/{station_id}/decommission")
def enrollment_decommission(
    request: Request,
    station_id: StationIdPath,
    caller: PageCaller,
    db: Db,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    check_form_csrf(caller, csrf_token)
    service = _setup(request, db, caller)
    enrollment.decommission(
        db, caller, service.broker_admin, station_id, remote_addr=remote_addr(request)
    )
    db.commit()
    return RedirectResponse(f"/enrollment?decommissioned={station_id}", status_code=303)
