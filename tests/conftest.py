"""Shared fixtures: a real Mosquitto with broker/'s configuration, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from swabline.broker import SERVER_USER, Broker

POSTGRES_ADMIN_URL = os.environ.get(
    "SWABLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto child process on a free loopback port with the server and 8 station users.

    Users: ``swabline-server`` and ``st-1`` .. ``st-8``; passwords in ``broker.users``.
    """
    users = {SERVER_USER: secrets.token_urlsafe(12)}
    users.update({f"st-{i}": secrets.token_urlsafe(12) for i in range(1, 9)})
    with Broker(tmp_path / "broker", users=users) as b:
        yield b


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'swabline.db'}"


def _postgres_reachable() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    url = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}".strip()
    return None


def in_ci() -> bool:
    """``.ci/run`` sets ``SWABLINE_CI=1``; hosted runners set ``CI=true``."""
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("SWABLINE_CI", "CI")
    )


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL; skipped on laptops without one, never in CI."""
    problem = _postgres_reachable()
    if problem:
        if in_ci():
            pytest.fail(f"PostgreSQL tests must run in CI: {problem}")
        pytest.skip(problem)
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"swabline_test_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_server.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'swabline.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
