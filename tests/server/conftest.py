"""A server with a small province, users of every role and some ingested data, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server import orgs, users
from server.access import system_principal
from server.auth import issue, use_password_hasher
from server.config import ServerConfig
from server.db import make_engine, migrate
from server.ingest import classify, store_resilient
from server.models import OrgKind, Role, StationRow, TokenKind
from server.web import create_app
from tests.server.factories import message, pool_session

PASSWORD = "correct horse battery"

# code, name, kind, parent, facility_kind
TREE = [
    ("HN", "Hà Nội", OrgKind.PROVINCE, None, None),
    ("HN-BD", "Ba Đình", OrgKind.DISTRICT, "HN", None),
    ("HN-CG", "Cầu Giấy", OrgKind.DISTRICT, "HN", None),
    ("HN-BD-TYT", "Trạm Y tế Ba Đình", OrgKind.FACILITY, "HN-BD", "sampling"),
    ("HN-CG-TYT", "Trạm Y tế Cầu Giấy", OrgKind.FACILITY, "HN-CG", "sampling"),
    ("HN-LAB", "CDC Hà Nội", OrgKind.FACILITY, "HN", "lab"),
]
USERS = {
    "admin": (Role.PROVINCIAL_ADMIN, "HN"),
    "mgr-bd": (Role.FACILITY_MANAGER, "HN-BD-TYT"),
    "staff-bd": (Role.SAMPLING_STAFF, "HN-BD-TYT"),
    "staff-cg": (Role.SAMPLING_STAFF, "HN-CG-TYT"),
    "lab": (Role.LAB_STAFF, "HN-LAB"),
    "ops": (Role.OPS, "HN"),
    "tech-cg": (Role.TECHNICIAN, "HN-CG-TYT"),
}


@dataclass
class Env:
    engine: Engine
    config: ServerConfig
    app: Any
    org: dict[str, int] = field(default_factory=dict)
    user_id: dict[str, int] = field(default_factory=dict)
    token: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None = None, **kw: Any) -> httpx.AsyncClient:
        """An in-process client; ``who`` authenticates with that user's API token."""
        if who:
            kw.setdefault("headers", {})["Authorization"] = f"Bearer {self.token[who]}"
        kw.setdefault("transport", httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000)))
        return httpx.AsyncClient(base_url="http://testserver", **kw)


def build_env(db_url: str, config: ServerConfig | None = None) -> Env:
    engine = make_engine(db_url)
    migrate(engine)
    config = config or ServerConfig()
    env = Env(engine, config, create_app(engine, config=config))
    root = system_principal("test")
    with Session(engine) as db:
        made: dict[str, Any] = {}
        for code, name, kind, parent, fk in TREE:
            made[code] = orgs.create(
                db,
                root,
                code=code,
                name=name,
                kind=kind,
                parent=made.get(parent or ""),
                facility_kind=fk,
            )
        env.org = {c: o.id for c, o in made.items()}
        for username, (role, at) in USERS.items():
            user = users.create(
                db,
                root,
                username=username,
                display_name=username.title(),
                password=PASSWORD,
                locale="vi",
                grants=[users.GrantSpec(role, env.org[at])],
            )
            env.user_id[username] = user.id
            env.token[username] = issue(
                db, user.id, TokenKind.API, lifetime=timedelta(days=1), name="test"
            ).secret
        for sid, facility in (("st-1", "HN-BD-TYT"), ("st-2", "HN-CG-TYT")):
            db.add(
                StationRow(
                    station_id=sid,
                    state="unknown",
                    bd_seq=-1,
                    max_seq=0,
                    record_count=0,
                    active=True,
                    facility_id=env.org[facility],
                )
            )
        db.commit()
    records = pool_session("st-1", "T-BD-1", ["079303001234", "001090012345"])
    records += pool_session("st-2", "T-CG-1", ["001090099999"])
    store_resilient(engine, classify([message(r) for r in records]))
    return env


@pytest.fixture(autouse=True)
def cheap_argon2() -> Iterator[None]:
    """argon2 with its smallest cost: the defaults take ~0.5 s per hash on a busy CI box."""
    previous = use_password_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    yield
    use_password_hasher(previous)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    e = build_env(db_url)
    yield e
    e.engine.dispose()


@pytest.fixture
async def admin(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    async with env.client("admin") as c:
        yield c


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database (SQLite and PostgreSQL), disposed afterwards."""
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()
