"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from server.db import alembic_config, make_engine, metadata, migrate


def test_migrations_match_the_models_and_downgrade_cleanly(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata())
    assert diff == []
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert "persons" not in inspect(engine).get_table_names()
    assert "facility_id" not in {c["name"] for c in inspect(engine).get_columns("stations")}
    migrate(engine)
    assert {"persons", "tubes", "pool_members", "audit_log"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()
