"""``/api/auth``: log in and out, who am I, API tokens."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from server.access import Permission, Principal
from server.audit import audit, snapshot
from server.auth import SESSION_COOKIE, issue, login, revoke
from server.errors import NotFoundError
from server.models import AuthToken, TokenKind, User
from server.users import change_own, grants_of
from server.web.deps import Caller, Config, Db, remote_addr
from server.web.schemas import (
    GrantOut,
    LoginIn,
    LoginOut,
    MeOut,
    MePatch,
    NewTokenOut,
    PathId,
    Problem,
    TokenIn,
    TokenOut,
)

router = APIRouter(prefix="/api/auth", tags=["auth"])
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
}


def me_out(db: Db, user: User, principal: Principal | None = None) -> MeOut:
    grants = grants_of(db, user.id)
    perms = sorted(p.value for p in Permission if principal is not None and principal.can(p))
    return MeOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        locale=user.locale,
        roles=[
            GrantOut(role=g.role, organisation_id=o.id, organisation_code=o.code) for g, o in grants
        ],
        permissions=perms,
    )


def set_session_cookie(response: Response, secret: str, config: Config) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(config.auth.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=config.http.cookie_secure,
        path="/",
    )


@router.post("/login", responses={401: {"model": Problem}, 429: {"model": Problem}})
def api_login(
    body: LoginIn, request: Request, response: Response, db: Db, config: Config
) -> LoginOut:
    """Open a web session: sets the HttpOnly session cookie and returns the CSRF token.

    Rate-limited per username and per client address (429 with Retry-After).
    """
    user, issued = login(db, body.username, body.password, remote_addr(request), config.auth)
    set_session_cookie(response, issued.secret, config)
    from server.access import load_grants

    principal = Principal(user_id=user.id, username=user.username, grants=load_grants(db, user.id))
    assert issued.token.csrf_token is not None
    return LoginOut(
        user=me_out(db, user, principal),
        csrf_token=issued.token.csrf_token,
        expires_at=issued.token.expires_at,
    )


@router.post("/logout", status_code=204, responses=ERRORS)
def api_logout(caller: Caller, db: Db, response: Response) -> None:
    """End the web session (a bearer token stays valid: revoke it under /api/auth/tokens)."""
    if caller.via == "session" and caller.token_id is not None:
        revoke(db, caller.token_id)
        db.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me", responses=ERRORS)
def api_me(caller: Caller, db: Db) -> MeOut:
    """The caller: roles and what they allow."""
    user = db.get(User, caller.user_id)
    if user is None:
        raise NotFoundError("no such user")
    return me_out(db, user, caller)


@router.patch("/me", responses=ERRORS)
def api_me_patch(body: MePatch, caller: Caller, db: Db, request: Request) -> MeOut:
    """Change your own name, language or password (a new password needs the current one)."""
    user = db.get(User, caller.user_id)
    if user is None:
        raise NotFoundError("no such user")
    change_own(
        db,
        caller,
        user,
        display_name=body.display_name,
        locale=body.locale,
        password=body.password,
        current_password=body.current_password,
        remote_addr=remote_addr(request),
    )
    db.commit()
    return me_out(db, user, caller)


@router.get("/tokens", responses=ERRORS)
def api_tokens(caller: Caller, db: Db) -> list[TokenOut]:
    """Your API tokens (never their secrets)."""
    rows = db.scalars(
        select(AuthToken)
        .where(AuthToken.user_id == caller.user_id, AuthToken.kind == TokenKind.API.value)
        .order_by(AuthToken.id)
    )
    return [TokenOut.model_validate(r) for r in rows]


@router.post("/tokens", status_code=201, responses=ERRORS)
def api_token_create(
    body: TokenIn, caller: Caller, db: Db, config: Config, request: Request
) -> NewTokenOut:
    """Create an API token for yourself; the secret is in the answer and nowhere else."""
    if caller.user_id is None:
        raise NotFoundError("no such user")
    issued = issue(
        db,
        caller.user_id,
        TokenKind.API,
        lifetime=timedelta(days=body.days or config.auth.api_token_days),
        name=body.name,
        remote_addr=remote_addr(request),
    )
    audit(
        db,
        caller,
        "token.create",
        object_type="token",
        object_id=issued.token.id,
        organisation_id=None,
        before=None,
        after=snapshot(issued.token),
        remote_addr=remote_addr(request),
    )
    db.commit()
    out = TokenOut.model_validate(issued.token).model_dump()
    return NewTokenOut(**out, token=issued.secret)


@router.delete("/tokens/{token_id}", status_code=204, responses=ERRORS)
def api_token_revoke(token_id: PathId, caller: Caller, db: Db, request: Request) -> None:
    """Revoke one of your API tokens."""
    token = db.get(AuthToken, token_id)
    if token is None or token.user_id != caller.user_id or token.kind != TokenKind.API.value:
        raise NotFoundError(f"no token {token_id}")
    before = snapshot(token)
    revoke(db, token.id)
    db.flush()
    db.refresh(token)
    audit(
        db,
        caller,
        "token.revoke",
        object_type="token",
        object_id=token.id,
        organisation_id=None,
        before=before,
        after=snapshot(token),
        remote_addr=remote_addr(request),
    )
    db.commit()
