"""FastAPI dependencies shared by every router (API and pages, this team's and later ones).

Use them as annotated parameters::

    @router.get("/api/things")
    def things(db: Db, caller: Caller) -> ...:
        scope = caller.require(Permission.DATA_READ)
        ...

``Caller`` accepts a bearer API token (``Authorization: Bearer swl_...``) or the web session
cookie; with the cookie, unsafe methods must echo the session's CSRF token in the
``X-CSRF-Token`` header. ``PageCaller`` is for server-rendered pages: the same session, but form
posts check ``csrf_token`` themselves (``check_form_csrf``), and a missing session redirects to
the login page (``server.web.errors``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from server.access import Principal
from server.auth import CSRF_HEADER, SESSION_COOKIE, authenticate
from server.config import ServerConfig
from server.errors import ForbiddenError, NotAuthenticatedError
from server.models import TokenKind

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="API token for scripts: `swabline admin create-token` or POST /api/auth/tokens.",
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="Web session cookie from POST /api/auth/login or the login page; unsafe "
    f"methods also need the {CSRF_HEADER} header.",
)


def get_db(request: Request) -> Iterator[Session]:
    """A database session for the request; writers call ``db.commit()`` themselves."""
    with Session(request.app.state.engine) as db:
        yield db


Db = Annotated[Session, Depends(get_db)]


def get_config(request: Request) -> ServerConfig:
    config: ServerConfig = request.app.state.config
    return config


Config = Annotated[ServerConfig, Depends(get_config)]


def remote_addr(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _from_request(
    request: Request,
    db: Session,
    config: ServerConfig,
    credentials: HTTPAuthorizationCredentials | None,
    cookie: str | None,
) -> Principal:
    if credentials is not None:
        principal = authenticate(db, credentials.credentials, TokenKind.API, config.auth)
    elif cookie:
        principal = authenticate(db, cookie, TokenKind.SESSION, config.auth)
    else:
        raise NotAuthenticatedError("log in, or send an API token as 'Authorization: Bearer'")
    request.state.principal = principal
    return principal


def caller(
    request: Request,
    db: Db,
    config: Config,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    cookie: Annotated[str | None, Security(cookie_scheme)],
) -> Principal:
    principal = _from_request(request, db, config, credentials, cookie)
    if principal.via == "session" and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not principal.csrf_token or not hmac.compare_digest(sent, principal.csrf_token):
            raise ForbiddenError(f"missing or wrong {CSRF_HEADER} header")
    return principal


Caller = Annotated[Principal, Depends(caller)]


def page_caller(request: Request, db: Db, config: Config) -> Principal:
    return _from_request(request, db, config, None, request.cookies.get(SESSION_COOKIE))


PageCaller = Annotated[Principal, Depends(page_caller)]


def check_form_csrf(principal: Principal, token: str | None) -> None:
    """For HTML form posts: the form's ``csrf_token`` must be the session's."""
    if (
        not principal.csrf_token
        or not token
        or not hmac.compare_digest(token, principal.csrf_token)
    ):
        raise ForbiddenError("the form has expired; reload the page", text="error.form_expired")
