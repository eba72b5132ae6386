"""Accounts and credentials: argon2 passwords, web sessions, API tokens, the login rate limit.

No FastAPI here (the admin command uses it too); ``server.web.deps`` turns these into request
dependencies.

- Passwords are argon2id hashes (argon2-cffi defaults); a login for an unknown user still
  verifies against a dummy hash, so timing does not tell which usernames exist.
- A session or token is an opaque random secret (256 bits) that the client holds; the server
  stores only its SHA-256. A tampered, unknown, revoked or expired secret matches nothing.
  Sessions end ``auth.session_hours`` after login or ``auth.session_idle_minutes`` after the
  last request; API tokens at their ``expires_at``. Deactivating a user revokes everything.
- Web sessions carry a CSRF token that unsafe requests authenticated by the cookie must echo
  (header ``X-CSRF-Token`` or form field ``csrf_token``); the cookie is HttpOnly and
  SameSite=Strict.
- Logins are rate-limited per username and per client address over a sliding window
  (``login_attempts`` table, so the limit holds across restarts).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.access import Principal, load_grants
from server.config import AuthConfig
from server.errors import NotAuthenticatedError, TooManyRequestsError
from server.models import AuthToken, LoginAttempt, TokenKind, User

SESSION_COOKIE = "swabline_session"
CSRF_HEADER = "X-CSRF-Token"
TOKEN_PREFIX = "swl_"
TOUCH_EVERY = timedelta(seconds=60)
"""How stale ``last_used_at`` may get before a request writes it again."""

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("swabline-dummy-password")


def use_password_hasher(hasher: PasswordHasher) -> PasswordHasher:
    """Replace the argon2 parameters (tests use cheap ones); returns the previous hasher.

    Existing hashes keep verifying (argon2 hashes carry their parameters); a login rehashes
    a password whose parameters differ from the current ones.
    """
    global _hasher, _DUMMY_HASH
    previous = _hasher
    _hasher = hasher
    _DUMMY_HASH = hasher.hash("swabline-dummy-password")
    return previous


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check ``password``; with ``password_hash`` None, burn the same time and return False."""
    try:
        ok = _hasher.verify(password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return ok and password_hash is not None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Issued:
    """A freshly issued secret (shown once) and its row."""

    secret: str
    token: AuthToken


def issue(
    db: Session,
    user_id: int,
    kind: TokenKind,
    *,
    lifetime: timedelta,
    name: str | None = None,
    remote_addr: str | None = None,
) -> Issued:
    now = datetime.now(UTC)
    secret = new_secret(TOKEN_PREFIX if kind is TokenKind.API else "")
    token = AuthToken(
        token_hash=digest(secret),
        kind=kind.value,
        user_id=user_id,
        name=name,
        csrf_token=secrets.token_urlsafe(24) if kind is TokenKind.SESSION else None,
        created_at=now,
        expires_at=now + lifetime,
        last_used_at=now,
        remote_addr=remote_addr,
    )
    db.add(token)
    db.flush()
    return Issued(secret, token)


def authenticate(
    db: Session, secret: str, kind: TokenKind, config: AuthConfig, *, now: datetime | None = None
) -> Principal:
    """The principal holding ``secret``; ``NotAuthenticatedError`` if it is not (any longer)
    valid. Touches ``last_used_at`` (at most once a minute)."""
    now = now or datetime.now(UTC)
    if not secret or len(secret) > 200:
        raise NotAuthenticatedError("not logged in")
    row = db.execute(
        select(AuthToken, User)
        .join(User, User.id == AuthToken.user_id)
        .where(AuthToken.token_hash == digest(secret), AuthToken.kind == kind.value)
    ).first()
    if row is None:
        raise NotAuthenticatedError("unknown session or token")
    token, user = row
    if token.revoked_at is not None or not user.active:
        raise NotAuthenticatedError("the session or token was revoked")
    if now >= token.expires_at:
        raise NotAuthenticatedError("the session or token has expired")
    last = token.last_used_at or token.created_at
    if kind is TokenKind.SESSION and now - last > timedelta(minutes=config.session_idle_minutes):
        raise NotAuthenticatedError("the session has expired (idle)")
    if now - last >= TOUCH_EVERY:
        db.execute(update(AuthToken).where(AuthToken.id == token.id).values(last_used_at=now))
        db.commit()
    return Principal(
        user_id=user.id,
        username=user.username,
        grants=load_grants(db, user.id),
        via="session" if kind is TokenKind.SESSION else "token",
        token_id=token.id,
        csrf_token=token.csrf_token,
    )


def revoke(db: Session, token_id: int) -> None:
    db.execute(
        update(AuthToken)
        .where(AuthToken.id == token_id, AuthToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


def revoke_all(db: Session, user_id: int) -> None:
    db.execute(
        update(AuthToken)
        .where(AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )


def check_rate(
    db: Session, username: str, remote_addr: str, config: AuthConfig, now: datetime
) -> None:
    """``TooManyRequestsError`` if this username or address failed too often lately."""
    since = now - timedelta(seconds=config.login_window_s)

    def failures(column: Any, value: str) -> int:
        return int(
            db.scalar(
                select(func.count())
                .select_from(LoginAttempt)
                .where(
                    column == value,
                    LoginAttempt.at >= since,
                    LoginAttempt.success.is_(False),
                )
            )
            or 0
        )

    if (
        failures(LoginAttempt.username, username) >= config.login_max_failures
        or failures(LoginAttempt.remote_addr, remote_addr) >= config.login_max_failures_per_addr
    ):
        raise TooManyRequestsError(
            "too many failed logins; try again later",
            headers={"Retry-After": str(config.login_window_s)},
        )


def login(
    db: Session, username: str, password: str, remote_addr: str, config: AuthConfig
) -> tuple[User, Issued]:
    """Check a username and password and open a web session. Commits.

    Raises ``TooManyRequestsError`` (rate limit; the password is not even checked) or
    ``NotAuthenticatedError`` (the same message for an unknown user and a wrong password).
    """
    now = datetime.now(UTC)
    username = username.strip().lower()[:64]
    remote_addr = remote_addr[:64]
    check_rate(db, username, remote_addr, config, now)
    user = db.scalar(select(User).where(User.username == username))
    ok = verify_password(user.password_hash if user else None, password)
    ok = ok and user is not None and user.active
    db.add(LoginAttempt(at=now, username=username, remote_addr=remote_addr, success=ok))
    if not ok or user is None:
        db.commit()
        raise NotAuthenticatedError("wrong username or password")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = now
    issued = issue(
        db,
        user.id,
        TokenKind.SESSION,
        lifetime=timedelta(hours=config.session_hours),
        remote_addr=remote_addr,
    )
    db.commit()
    return user, issued
