"""Pages for the public, without login: result lookup, slip verification, self-declaration.

The lookup answers every query with the same page shape, and an unknown ID with the very same
page as a known ID with a wrong date of birth (see ``server.public``).
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from server.access import Permission, Principal
from server.audit import audit, snapshot
from server.auth import SESSION_COOKIE
from server.config import ServerConfig
from server.errors import HttpError
from server.healthqr import format_lookup_code
from server.public import (
    DeclarationForm,
    declare,
    load_slip,
    lookup,
    mask_key,
    mask_name,
    throttled,
)
from server.web.deps import Db, page_caller, remote_addr
from server.web.qr import qr_svg
from server.web.schemas import Text
from server.web.services import Services, base_url
from server.web.templating import language, render

router = APIRouter(include_in_schema=False)

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _private(response: Response) -> Response:
    """Personal data: never cached, never leaked through the Referer header."""
    response.headers.update(NO_STORE)
    return response


@router.get("/lookup")
def lookup_page(request: Request) -> Response:
    return _private(render(request, "lookup.html", {"answer": None, "form": {}}))


@router.post("/lookup")
def lookup_submit(
    request: Request,
    db: Db,
    services: Services,
    id_number: Annotated[Text, Form(max_length=64)] = "",
    birth_date: Annotated[Text, Form(max_length=32)] = "",
    code: Annotated[Text, Form(max_length=64)] = "",
) -> Response:
    answer = lookup(
        db,
        keyed=services.keyed,
        signer=services.ctx.signer,
        limits=services.lookup_limits,
        remote_addr=remote_addr(request),
        id_number=id_number,
        birth_date=birth_date,
        code=code,
    )
    slips = []
    if answer.status == "found":
        root = base_url(request, services)
        for sample in answer.samples:
            if sample.slip_token is not None:
                url = f"{root}/v/{sample.slip_token}"
                slips.append((sample, url, qr_svg(url)))
    status = 429 if answer.status == "limited" else 200
    return _private(
        render(
            request,
            "lookup.html",
            {
                "answer": answer,
                "slips": slips,
                "printed": datetime.now(services.tz),
                "form": {"id_number": id_number, "birth_date": birth_date},
            },
            status_code=status,
        )
    )


@router.get("/v/{token}")
def verify_page(request: Request, db: Db, services: Services, token: str) -> Response:
    slip = load_slip(db, services.ctx.signer, token[:100])
    return _private(
        render(
            request,
            "verify.html",
            {"slip": slip, "mask_name": mask_name, "mask_key": mask_key},
            status_code=200 if slip else 404,
        )
    )


def desk_staff(request: Request, db: Session, config: ServerConfig) -> Principal | None:
    """The logged-in staff member at a registration desk, if the browser has a session of
    someone who handles personal data (``data.read``); None for the public."""
    if not request.cookies.get(SESSION_COOKIE):
        return None
    try:
        principal = page_caller(request, db, config)
    except HttpError:
        return None
    return principal if principal.can(Permission.DATA_READ) else None


@router.get("/declare")
def declare_page(request: Request, db: Db, services: Services) -> Response:
    desk_staff(request, db, services.config)  # staff get the form with their CSRF token
    return render(request, "declare.html", {"form": DeclarationForm(), "errors": {}})


@router.post("/declare")
def declare_submit(
    request: Request,
    db: Db,
    services: Services,
    name: Annotated[Text, Form(max_length=400)] = "",
    birth_date: Annotated[Text, Form(max_length=32)] = "",
    sex: Annotated[Text, Form(max_length=16)] = "",
    document: Annotated[Text, Form(max_length=64)] = "",
    phone: Annotated[Text, Form(max_length=32)] = "",
    address: Annotated[Text, Form(max_length=600)] = "",
    on_behalf: Annotated[str | None, Form(max_length=8)] = None,
    csrf_token: Annotated[str | None, Form(max_length=100)] = None,
) -> Response:
    staff = desk_staff(request, db, services.config)
    if staff is not None and not (
        staff.csrf_token and csrf_token and hmac.compare_digest(csrf_token, staff.csrf_token)
    ):
        staff = None  # not the desk's own form: counted like the public
    form = DeclarationForm(
        name=name,
        birth_date=birth_date,
        sex=sex,
        document=document,
        phone=phone,
        address=address,
        on_behalf=on_behalf is not None,
    )
    today = datetime.now(services.tz).date()
    dob, errors = form.validate(today)
    if errors or dob is None:
        return render(request, "declare.html", {"form": form, "errors": errors}, status_code=400)
    addr = remote_addr(request)
    # A registration desk prints cards for a queue: its staff are not limited per address.
    if staff is None and throttled(
        db,
        remote_addr=addr,
        key_hash=services.keyed("declare", addr),
        limits=services.declare_limits,
        now=datetime.now(services.tz),
        purpose="declare",
    ):
        db.commit()
        return render(
            request,
            "declare.html",
            {"form": form, "errors": {"": "common.too_many"}},
            status_code=429,
        )
    declared = declare(db, keyed=services.keyed, form=form, dob=dob, locale=language(request))
    if staff is not None:
        after = snapshot(declared.declaration) or {}
        after.pop("lookup_code_hash", None)
        audit(
            db,
            staff,
            "declaration.create",
            object_type="declaration",
            object_id=declared.declaration.qid,
            organisation_id=staff.grants[0].organisation_id if staff.grants else None,
            before=None,
            after=after,
            remote_addr=addr,
        )
    db.commit()
    payload = declared.qr.encode()
    return _private(
        render(
            request,
            "declared.html",
            {
                "declared": declared,
                "qr": qr_svg(payload, scale=5),
                "payload": payload,
                "code": declared.lookup_code,
                "format_code": format_lookup_code,
            },
        )
    )
