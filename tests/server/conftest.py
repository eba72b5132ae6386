from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from server.db import make_engine, migrate


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database (SQLite and PostgreSQL), disposed afterwards."""
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()
