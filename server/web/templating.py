"""Server-rendered pages: one Jinja2 environment, the shared layout and the language choice.

Pages call ``render(request, "name.html", {...})``; every template gets ``t`` (the translator),
``lang``, ``principal`` (or None), ``csrf_token`` (for forms) and ``can(permission)``. Templates
extend ``base.html`` (navigation, language switch, logout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from server.access import Permission, Principal
from server.web.i18n import LANG_COOKIE, LANGS, translator

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def language(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked in LANGS:
        return asked
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LANGS:
        return cookie
    locale = getattr(request.state, "locale", None)
    return locale if locale in LANGS else "vi"


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> Response:
    principal: Principal | None = getattr(request.state, "principal", None)
    lang = language(request)
    ctx: dict[str, Any] = {
        "t": translator(lang),
        "lang": lang,
        "principal": principal,
        "csrf_token": principal.csrf_token if principal else None,
        "can": (lambda perm: principal is not None and principal.can(Permission(perm))),
        **(context or {}),
    }
    response = TEMPLATES.TemplateResponse(request, name, ctx, status_code=status_code)
    if request.query_params.get("lang") in LANGS:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax")
    return response
