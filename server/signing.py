"""Server secrets and what is made with them: signed result-slip tokens, keyed hashes.

A secret comes from a file named in the configuration (mode 0600, like every secret) or, when
none is configured, is made once with ``secrets.token_bytes`` and kept in ``server_secrets``, so
that every server process and every restart uses the same one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.errors import ConfigError
from server.models import ServerSecret

SLIP_KEY = "result_slip"
LOOKUP_KEY = "lookup"
TAG_BYTES = 12
"""96-bit truncated HMAC-SHA256 tags: short enough for a small QR, far beyond guessing."""


def load_secret(engine: Engine, name: str, path: Path | None = None) -> bytes:
    """The secret ``name``: read from ``path`` if given, else made once and kept in the DB."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the secret file {path}: {exc.strerror}") from None
        if len(text) < 32:
            raise ConfigError(f"the secret in {path} is shorter than 32 characters")
        return text.encode()
    with Session(engine) as session:
        row = session.get(ServerSecret, name)
        if row is not None:
            return row.value.encode()
    value = secrets.token_urlsafe(48)
    try:
        with Session(engine) as session, session.begin():
            session.add(ServerSecret(name=name, value=value))
    except IntegrityError:
        pass  # another process made it first: use theirs
    with Session(engine) as session:
        row = session.get(ServerSecret, name)
        assert row is not None
        return row.value.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SlipRef:
    """What a result slip's token names: one result of one person."""

    result_id: int
    person_id: int


class SlipSigner:
    """Makes and checks the tokens in result-slip QR codes: ``<result>.<person>.<tag>``."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _tag(self, body: str) -> str:
        mac = hmac.new(self._key, b"slip:" + body.encode(), hashlib.sha256).digest()
        return _b64(mac[:TAG_BYTES])

    def sign(self, ref: SlipRef) -> str:
        body = f"{ref.result_id}.{ref.person_id}"
        return f"{body}.{self._tag(body)}"

    def verify(self, token: str) -> SlipRef | None:
        """The reference in ``token``, or None if it was not made with this key."""
        parts = token.strip().split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts[:2]) or len(token) > 80:
            return None
        body = f"{parts[0]}.{parts[1]}"
        try:
            given = _unb64(parts[2])
            expected = _unb64(self._tag(body))
        except ValueError:
            return None
        if not hmac.compare_digest(given, expected):
            return None
        return SlipRef(int(parts[0]), int(parts[1]))


class KeyedHash:
    """HMAC-SHA256 hex digests under one key, with a purpose prefix (lookup codes, ID numbers
    in the rate limiter): the database never holds these values in clear."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()
