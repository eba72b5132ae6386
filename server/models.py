"""The central database schema (SQLAlchemy 2). Changes go through Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class StationRow(Base):
    """A station as last heard of."""

    __tablename__ = "stations"

    station_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    bd_seq: Mapped[int] = mapped_column(BigInteger, default=-1)
    agent_version: Mapped[str | None] = mapped_column(String(32))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    max_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outbox_depth: Mapped[int | None] = mapped_column(Integer)
    heartbeat: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RecordRow(Base):
    """A record exactly as the station sent it, stored once per ``record_id``."""

    __tablename__ = "records"
    __table_args__ = (UniqueConstraint("station_id", "seq", name="uq_records_station_seq"),)

    record_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(63), index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    boot_id: Mapped[str] = mapped_column(String(64))
    wall_time: Mapped[float]
    mono_ns: Mapped[int] = mapped_column(BigInteger)
    clock_synced: Mapped[bool]
    kind: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class RejectedMessage(Base):
    """A message that failed validation, kept for inspection (payload cut at 64 KiB)."""

    __tablename__ = "rejected_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    topic: Mapped[str] = mapped_column(String(255))
    station_id: Mapped[str | None] = mapped_column(String(63))
    reason: Mapped[str] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
