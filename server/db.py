"""Database engine and migrations. SQLite (WAL) by default, PostgreSQL in production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from server.errors import DatabaseError

MIGRATIONS = Path(__file__).with_name("migrations")


def metadata() -> MetaData:
    """Every table of the server (all defined in ``server.models``)."""
    from server.models import Base

    return Base.metadata


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL plans
    each execution afresh (``plan_cache_mode = force_custom_plan``)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(
                "PRAGMA synchronous=NORMAL"
            )  # with WAL: durable at checkpoint, no corruption
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)

    @event.listens_for(engine, "connect")
    def _postgres_settings(dbapi_conn: Any, _record: Any) -> None:
        # Plan every execution for the tables as they are now. A connection lives for the whole
        # campaign and runs the same statements, which the driver prepares: PostgreSQL would
        # keep a generic plan made while the tables were nearly empty (a sequential scan) until
        # an ANALYZE of the table, which never comes with autovacuum off, and every batch would
        # read the whole tubes table (docs/server.md, "PostgreSQL and its plans"). Planning costs
        # well under a millisecond per statement; foreign-key checks follow the same setting.
        with dbapi_conn.cursor() as cur:
            cur.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_conn.commit()  # or the pool's rollback on return would undo the SET

    return engine


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration."""
    try:
        with engine.begin() as conn:
            cfg = alembic_config(engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot migrate {engine.url!r}: {exc}") from exc


def upsert(engine: Engine, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``on_conflict_do_nothing`` / ``on_conflict_do_update``.

    A mapped class is replaced by its Core table: executemany without the ORM's bulk
    bookkeeping, several times faster.
    """
    table = getattr(table, "__table__", table)
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise DatabaseError(f"database {dialect!r} is not supported (SQLite or PostgreSQL)")
