"""The central database schema (SQLAlchemy 2). Changes go through Alembic migrations.

Three groups of tables:

- **What stations sent**, exactly as received: ``records`` (the append-only event log, one row
  per ``record_id``), ``rejected_messages`` (everything that failed validation, with the reason),
  ``stations`` (each station as last heard of, plus its registry data).
- **What the records mean**, projected from ``records`` by ingest in the same transaction as the
  raw insert (see ``server/projection.py``): ``persons``, ``tubes``, ``pool_members`` (tube <->
  persons, with position and undo state), ``pool_undos``, ``staff``, ``sample_events`` (the
  sample lifecycle: collected, shipped, received_at_lab, resulted) and ``results`` (corrections
  keep the earlier values).
- **Who may see and change what**: ``organisations`` (province -> districts -> facilities, as a
  materialised path), ``users``, ``user_roles`` (a role at an organisation node),
  ``auth_tokens`` (web sessions and API tokens, stored as hashes), ``login_attempts`` and the
  ``audit_log`` (who, when, what, before, after).
- **Enrollment**: ``enrollment_tokens`` (single use, per sampling facility, stored as hashes) and
  ``station_enrollments`` (how an enrolled station's id was made, its credentials' state).

Every timestamp is timezone-aware UTC (``UtcDateTime``), on SQLite too.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigId = BigInteger().with_variant(Integer(), "sqlite")
"""64-bit ids on PostgreSQL; SQLite only auto-increments ``INTEGER PRIMARY KEY``."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime}  # noqa: RUF012


def table(model: type[Base]) -> Table:
    """The Core table of a model, for bulk (executemany) statements without ORM bookkeeping."""
    return cast(Table, model.__table__)


# --- enumerations (stored as strings; the check lists live in the migration too) -----------


class OrgKind(enum.StrEnum):
    PROVINCE = "province"
    DISTRICT = "district"
    FACILITY = "facility"


class FacilityKind(enum.StrEnum):
    SAMPLING = "sampling"
    LAB = "lab"
    BOTH = "both"


class Role(enum.StrEnum):
    """What a user may do, at an organisation node and everything below it."""

    PROVINCIAL_ADMIN = "provincial_admin"
    """Everything in scope: organisations, users, stations, data."""
    FACILITY_MANAGER = "facility_manager"
    """Users and stations of their facilities; reads all data in scope."""
    SAMPLING_STAFF = "sampling_staff"
    """Reads persons, tubes, pools and samples in scope."""
    LAB_STAFF = "lab_staff"
    """Reads tubes and samples in scope; enters results (lab reception and results)."""
    OPS = "ops"
    """Station fleet: status, health, remote commands."""
    TECHNICIAN = "technician"
    """Stations: register, edit, deactivate (provisioning)."""


class SampleStage(enum.StrEnum):
    """The sample lifecycle, in order. ``tubes.status`` holds the furthest stage reached."""

    OPEN = "open"
    COLLECTED = "collected"
    SHIPPED = "shipped"
    RECEIVED_AT_LAB = "received_at_lab"
    RESULTED = "resulted"


STAGE_RANK = {stage: rank for rank, stage in enumerate(SampleStage)}


class TokenKind(enum.StrEnum):
    SESSION = "session"
    """A web session (cookie), short-lived, with a CSRF token."""
    API = "api"
    """A bearer token for scripts, named, long-lived, revocable."""


# --- organisations and the station registry --------------------------------------------------


class Organisation(Base):
    """A node of the organisation tree: a province, a district or a facility.

    ``path`` is the materialised path of ids (``/1/4/9/``): a node's subtree is every row whose
    path starts with the node's path, which is how every query is scoped to a caller.
    """

    __tablename__ = "organisations"
    __table_args__ = (
        CheckConstraint("kind IN ('province', 'district', 'facility')", name="ck_org_kind"),
        CheckConstraint(
            "(kind = 'facility' AND facility_kind IN ('sampling', 'lab', 'both')) OR "
            "(kind <> 'facility' AND facility_kind IS NULL)",
            name="ck_org_facility_kind",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    facility_kind: Mapped[str | None] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(512), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StationRow(Base):
    """A station: registry data (facility, name, active) and what it last said about itself.

    Stations that publish before anyone registered them are created by ingest with no facility;
    only users scoped at a root (province) node see those.
    """

    __tablename__ = "stations"

    station_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    bd_seq: Mapped[int] = mapped_column(BigInteger, default=-1)
    agent_version: Mapped[str | None] = mapped_column(String(32))
    last_seen_at: Mapped[datetime | None] = mapped_column()
    max_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    """The highest seq stored in ``records``."""
    last_heartbeat_at: Mapped[datetime | None] = mapped_column()
    outbox_depth: Mapped[int | None] = mapped_column(Integer)
    heartbeat: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Added by 0002: the registry.
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    record_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    first_seen_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    # Added by 0008.
    seq_seen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """The highest seq heard of in other ways: a record kept as rejected (and acknowledged),
    a heartbeat's ``last_seq``. The seq floor sent after a birth is the greater of this and
    ``max_seq``."""


# --- the raw log --------------------------------------------------------------------------------


class RecordRow(Base):
    """A record as the station sent it, stored once per ``record_id``. Never updated.

    ``payload`` holds the message's bytes exactly as received (rows stored before migration
    0008 hold a re-encoding of what was kept then). The other columns are copied out of it
    for queries. Station lookups use ``uq_records_station_seq`` (``station_id`` first).
    """

    __tablename__ = "records"
    __table_args__ = (UniqueConstraint("station_id", "seq", name="uq_records_station_seq"),)

    record_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(63))
    seq: Mapped[int] = mapped_column(BigInteger)
    boot_id: Mapped[str] = mapped_column(String(64))
    wall_time: Mapped[float] = mapped_column(Float)
    mono_ns: Mapped[int] = mapped_column(BigInteger)
    clock_synced: Mapped[bool]
    kind: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(index=True)

    @property
    def data(self) -> dict[str, Any]:
        """The record's ``data`` object, read from the payload."""
        value = json.loads(self.payload).get("data", {})
        return value if isinstance(value, dict) else {}


class RejectedMessage(Base):
    """A message that failed validation, kept for inspection (payload cut at 64 KiB).

    ``record_id`` and ``seq`` are filled when the envelope was a valid record whose ``kind`` or
    ``data`` was not (such records are acknowledged, so the station stops resending them, and
    kept here instead of ``records``).
    """

    __tablename__ = "rejected_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    topic: Mapped[str] = mapped_column(String(255))
    station_id: Mapped[str | None] = mapped_column(String(63))
    reason: Mapped[str] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # Added by 0002.
    record_id: Mapped[str | None] = mapped_column(String(36), index=True)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    # Added by 0008.
    collides_with: Mapped[str | None] = mapped_column(String(36), index=True)
    """Set when the record's (station, seq) was already taken: the record_id holding it. The
    record is acknowledged but its seq is not accounted for (see ``server/ops/gaps.py``)."""


# --- what the records mean ----------------------------------------------------------------------


class Staff(Base):
    """Sampling staff as known from badge sign-ins (``sign_in`` records) or created by a manager."""

    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    staff_code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    first_seen_at: Mapped[datetime | None] = mapped_column()
    last_seen_at: Mapped[datetime | None] = mapped_column()
    last_station_id: Mapped[str | None] = mapped_column(String(63))


class Person(Base):
    """A person, keyed by ``key_type`` + ``key`` (CCCD number, QR-platform QID, other document).

    The identifying fields are as scanned; a later scan fills fields that were empty and replaces
    a name that came through a keyboard-mode scanner (``name_reliable`` false) with a reliable one.
    """

    __tablename__ = "persons"
    __table_args__ = (
        UniqueConstraint("key_type", "key", name="uq_persons_key"),
        CheckConstraint("key_type IN ('cccd', 'qid', 'document')", name="ck_person_key_type"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key_type: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    name_reliable: Mapped[bool] = mapped_column(Boolean, default=True)
    birth_date: Mapped[str | None] = mapped_column(String(10))
    sex: Mapped[str | None] = mapped_column(String(8))
    address: Mapped[str | None] = mapped_column(String(300))
    document_number: Mapped[str | None] = mapped_column(String(32), index=True)
    old_id: Mapped[str | None] = mapped_column(String(16))
    issue_date: Mapped[str | None] = mapped_column(String(10))
    ext: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Tube(Base):
    """A sample tube (one sample: one person, or a pool). ``code`` is the printed barcode.

    A row may be created by any record naming the tube (records of one station can arrive out of
    order across ingest workers); ``opened_record_id`` is set by its ``tube_opened``.
    ``open_count`` > 1 means the same label was opened more than once (a reused or duplicated
    label): the lab cannot tell such tubes apart, so it is shown as an anomaly.
    ``status`` is the furthest ``SampleStage`` reached; ``result`` the current result.
    ``facility_id`` is the sampling facility (the station's at opening), ``lab_id`` the lab that
    received it.
    """

    __tablename__ = "tubes"
    __table_args__ = (
        CheckConstraint(
            "status IN ('open', 'collected', 'shipped', 'received_at_lab', 'resulted')",
            name="ck_tube_status",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    station_id: Mapped[str | None] = mapped_column(ForeignKey("stations.station_id"), index=True)
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    lab_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    test_kind: Mapped[str | None] = mapped_column(String(16))
    mode: Mapped[str | None] = mapped_column(String(8))
    pool_size: Mapped[int | None] = mapped_column(Integer)
    staff_code: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default=SampleStage.OPEN.value, index=True)
    result: Mapped[str | None] = mapped_column(String(16), index=True)
    open_count: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(index=True)
    opened_record_id: Mapped[str | None] = mapped_column(String(36))
    closed_at: Mapped[datetime | None] = mapped_column()
    closed_record_id: Mapped[str | None] = mapped_column(String(36))
    close_reason: Mapped[str | None] = mapped_column(String(16))
    persons_at_close: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PoolMember(Base):
    """A person in a tube's pool, from one ``person_added`` record (``station_id``, ``seq``).

    Undoing never deletes: ``undone_at`` and ``undo_record_id`` are set. A person currently in
    the pool is a row with ``undone_at IS NULL``.
    """

    __tablename__ = "pool_members"
    __table_args__ = (UniqueConstraint("station_id", "seq", name="uq_pool_members_station_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tube_id: Mapped[int] = mapped_column(ForeignKey("tubes.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    record_id: Mapped[str] = mapped_column(String(36), unique=True)
    station_id: Mapped[str] = mapped_column(String(63))
    seq: Mapped[int] = mapped_column(BigInteger)
    retest: Mapped[bool] = mapped_column(Boolean, default=False)
    staff_code: Mapped[str | None] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column()
    undone_at: Mapped[datetime | None] = mapped_column()
    undo_record_id: Mapped[str | None] = mapped_column(String(36))


class PoolUndo(Base):
    """An ``undo`` record, kept by the ``seq`` it takes back, so that an undo which arrives before
    its ``person_added`` (another ingest worker, a resend) still applies when that one lands."""

    __tablename__ = "pool_undos"

    station_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    undone_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    undo_record_id: Mapped[str] = mapped_column(String(36), unique=True)
    tube_code: Mapped[str] = mapped_column(String(64))
    person_key: Mapped[str | None] = mapped_column(String(64))
    """Absent when the undo takes back the tube's opening (it had no person yet)."""
    undone_at: Mapped[datetime] = mapped_column()


class SampleEvent(Base):
    """One step of a sample's lifecycle: collected, shipped, received_at_lab, resulted.

    ``at`` is when it happened (the station's clock when it was synchronised, else the time the
    server received the record); ``recorded_at`` when the server stored it. Events from stations
    carry ``station_id`` and ``record_id``; events entered in the web UI carry ``user_id``.
    """

    __tablename__ = "sample_events"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('collected', 'shipped', 'received_at_lab', 'resulted')",
            name="ck_sample_event_kind",
        ),
        UniqueConstraint("record_id", "kind", name="uq_sample_events_record_kind"),
        Index("ix_sample_events_kind_at", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tube_id: Mapped[int] = mapped_column(ForeignKey("tubes.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column()
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    station_id: Mapped[str | None] = mapped_column(String(63))
    record_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Result(Base):
    """A result for a tube. Never updated in place except to mark it superseded: a correction is
    a new row whose ``supersedes_id`` names the earlier one, with a reason. The current result
    of a tube is its row with ``superseded_at IS NULL`` (mirrored in ``tubes.result``)."""

    __tablename__ = "results"
    __table_args__ = (
        CheckConstraint("value IN ('positive', 'negative', 'invalid')", name="ck_result_value"),
        CheckConstraint("source IN ('station', 'lab', 'import')", name="ck_result_source"),
        # At most one current result per tube, whatever races the writers run.
        Index(
            "uq_results_current_tube",
            "tube_id",
            unique=True,
            postgresql_where=text("superseded_at IS NULL"),
            sqlite_where=text("superseded_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tube_id: Mapped[int] = mapped_column(ForeignKey("tubes.id"), index=True)
    value: Mapped[str] = mapped_column(String(16))
    test_kind: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    station_id: Mapped[str | None] = mapped_column(String(63))
    record_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    entered_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reported_at: Mapped[datetime] = mapped_column(index=True)
    entered_at: Mapped[datetime] = mapped_column(default=utcnow)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"))
    superseded_at: Mapped[datetime | None] = mapped_column()
    correction_reason: Mapped[str | None] = mapped_column(Text)


# --- accounts, sessions, audit ------------------------------------------------------------------


class User(Base):
    """A login account. ``username`` is stored lower-case; the password as an argon2 hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    locale: Mapped[str] = mapped_column(String(5), default="vi")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()


class UserRole(Base):
    """A role granted to a user at an organisation node: it covers the node's whole subtree."""

    __tablename__ = "user_roles"
    __table_args__ = (
        UniqueConstraint("user_id", "role", "organisation_id", name="uq_user_roles"),
        CheckConstraint(
            "role IN ('provincial_admin', 'facility_manager', 'sampling_staff', 'lab_staff', "
            "'ops', 'technician')",
            name="ck_user_role",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuthToken(Base):
    """A web session or an API token. Only the SHA-256 of the secret is stored."""

    __tablename__ = "auth_tokens"
    __table_args__ = (CheckConstraint("kind IN ('session', 'api')", name="ck_token_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(100))
    csrf_token: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    remote_addr: Mapped[str | None] = mapped_column(String(64))


class LoginAttempt(Base):
    """Every login attempt: the rate limiter counts recent failures per username and address."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_addr_at", "remote_addr", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column()
    username: Mapped[str] = mapped_column(String(64))
    remote_addr: Mapped[str] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)


class AuditEntry(Base):
    """One write: who (``user_id``/``actor``), when, what (``action`` on ``object_type`` /
    ``object_id``), and the object ``before`` and ``after`` (JSON; null when created/removed).
    ``organisation_id`` is the node the object belongs to, so the log itself can be scoped."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    remote_addr: Mapped[str | None] = mapped_column(String(64))


# --- lab reception, result imports, results to people, reports (migration 0004) -------------


class BatchStatus(enum.StrEnum):
    """A transport box's way from the sampling site to the lab."""

    PACKING = "packing"
    """Tubes are being scanned into the box at the sampling site (the manifest)."""
    SHIPPED = "shipped"
    """The box left: every tube on the manifest got a ``shipped`` event."""
    RECEIVING = "receiving"
    """The lab is scanning the box's tubes."""
    CLOSED = "closed"
    """Reception finished: manifest tubes never scanned are missing."""


class LabBatch(Base):
    """A transport box (a lab batch). ``code`` is the box label; boxes are reused, so the code
    is unique only among batches that are not closed. A batch that a lab starts receiving
    without any manifest (the samples came before the list) has no ``origin_id``."""

    __tablename__ = "lab_batches"
    __table_args__ = (
        CheckConstraint(
            "status IN ('packing', 'shipped', 'receiving', 'closed')", name="ck_lab_batch_status"
        ),
        Index("ix_lab_batches_code_status", "code", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    origin_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    lab_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    shipped_at: Mapped[datetime | None] = mapped_column()
    received_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    station_id: Mapped[str | None] = mapped_column(String(63))
    """Set when a lab station started the reception."""


class LabBatchTube(Base):
    """A tube in a batch: on the manifest (``expected``), scanned at the lab (``received_at``),
    or both. Expected and never received when the batch closes: missing. Received and not
    expected (when there was a manifest): unexpected."""

    __tablename__ = "lab_batch_tubes"
    __table_args__ = (UniqueConstraint("batch_id", "tube_id", name="uq_lab_batch_tubes"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("lab_batches.id"), index=True)
    tube_id: Mapped[int] = mapped_column(ForeignKey("tubes.id"), index=True)
    expected: Mapped[bool] = mapped_column(Boolean, default=False)
    packed_at: Mapped[datetime | None] = mapped_column()
    received_at: Mapped[datetime | None] = mapped_column()
    received_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    station_id: Mapped[str | None] = mapped_column(String(63))
    record_id: Mapped[str | None] = mapped_column(String(36))


class ResultImport(Base):
    """One upload of a lab's CSV export: what was in it and what became of every row.

    ``report`` is the per-row validation report (JSON). A rejected file applied nothing."""

    __tablename__ = "result_imports"
    __table_args__ = (
        CheckConstraint("status IN ('applied', 'rejected')", name="ck_result_import_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    lab_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16))
    rows_total: Mapped[int] = mapped_column(Integer)
    rows_applied: Mapped[int] = mapped_column(Integer)
    rows_unchanged: Mapped[int] = mapped_column(Integer)
    rows_error: Mapped[int] = mapped_column(Integer)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSON)
    report: Mapped[list[Any]] = mapped_column(JSON)


class Declaration(Base):
    """A self-declaration by someone without the app: the server issues a ``qid`` for the
    personal QR code (health-QR v1.1 layout) and a ``lookup_code`` for the paper slip (stored as
    a keyed hash). The person row (``key_type`` 'qid') is created at the same time."""

    __tablename__ = "declarations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    qid: Mapped[str] = mapped_column(String(16), unique=True)
    lookup_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[str] = mapped_column(String(10))
    sex: Mapped[str | None] = mapped_column(String(8))
    document_number: Mapped[str | None] = mapped_column(String(32), index=True)
    phone: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(300))
    on_behalf: Mapped[bool] = mapped_column(Boolean, default=False)
    locale: Mapped[str] = mapped_column(String(5), default="vi")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LookupAttempt(Base):
    """A public result lookup: the rate limiter counts them per address and per keyed hash of
    the ID number asked for (whether or not it exists)."""

    __tablename__ = "lookup_attempts"
    __table_args__ = (
        Index("ix_lookup_attempts_addr_at", "remote_addr", "at"),
        Index("ix_lookup_attempts_key_at", "key_hash", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column()
    remote_addr: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64))


class Notification(Base):
    """An outbound message (a result to a person, an alert change to ops) with its retry state;
    ``target`` names where it goes (``server.outbound``). ``dedup_key`` makes enqueueing
    idempotent. Rows from before migration 0007 are result notifications."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="ck_notification_status"),
        Index("ix_notifications_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(32), server_default="results")
    event: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(128), unique=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id"), index=True)
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(500))


class NotificationDelivery(Base):
    """The delivery log: one row per attempt to hand an outbound message to its hook."""

    __tablename__ = "notification_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column()
    hook: Mapped[str] = mapped_column(String(32))
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[float] = mapped_column(Float)


class ReportFile(Base):
    """A generated report file (weekly or monthly, XLSX or CSV) for an organisation node,
    kept for download."""

    __tablename__ = "report_files"
    __table_args__ = (
        UniqueConstraint(
            "period", "period_start", "organisation_id", "format", name="uq_report_files"
        ),
        CheckConstraint("period IN ('day', 'week', 'month')", name="ck_report_file_period"),
        CheckConstraint("format IN ('xlsx', 'csv')", name="ck_report_file_format"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    period: Mapped[str] = mapped_column(String(8))
    period_start: Mapped[str] = mapped_column(String(10))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    format: Mapped[str] = mapped_column(String(8))
    filename: Mapped[str] = mapped_column(String(200))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    generated_at: Mapped[datetime] = mapped_column(default=utcnow)
    generated_by: Mapped[str] = mapped_column(String(100))


class StationActivity(Base):
    """Which minutes of an hour a station was heard from (``minutes``: bit ``m`` set when a
    heartbeat or record arrived in minute ``m``) and how many records it sent: the basis of
    the reports' station uptime and throughput."""

    __tablename__ = "station_activity"

    station_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    records: Mapped[int] = mapped_column(Integer, default=0)


class ServerSecret(Base):
    """Secrets the server makes for itself on first use (the result-slip signing key, the
    lookup hashing key) unless a secret file is configured."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- enrollment (server/enrollment.py) ----------------------------------------------------------


class EnrollmentTokenRow(Base):
    """A single-use enrollment token for a sampling facility, by the SHA-256 of its text (the
    text itself is never stored). With ``station_id`` it re-provisions that station."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    station_id: Mapped[str | None] = mapped_column(ForeignKey("stations.station_id"))
    station_name: Mapped[str | None] = mapped_column(String(200))
    """The name the station gets in the registry (optional)."""
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    created_by: Mapped[str] = mapped_column(String(100))
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    used_at: Mapped[datetime | None] = mapped_column()
    used_by_station: Mapped[str | None] = mapped_column(String(63))
    cancelled_at: Mapped[datetime | None] = mapped_column()


class StationEnrollmentRow(Base):
    """A station that was enrolled: how its id was made and the state of its credentials.

    Its facility, name and ``active`` live in ``stations`` (the registry). ``prefix`` is the
    station-id prefix derived from the facility's code; ``number`` counts per prefix.
    """

    __tablename__ = "station_enrollments"
    __table_args__ = (
        UniqueConstraint("prefix", "number", name="uq_station_enrollments_prefix_number"),
    )

    station_id: Mapped[str] = mapped_column(ForeignKey("stations.station_id"), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(40))
    number: Mapped[int] = mapped_column(Integer)
    enrolled_at: Mapped[datetime] = mapped_column()
    credentials_issued_at: Mapped[datetime] = mapped_column()
    credentials_generation: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(253))
    decommissioned_at: Mapped[datetime | None] = mapped_column()


# --- ops: station health history, alerts, remote commands (0005) ----------------------------------


class FacilitySchedule(Base):
    """When a facility operates: a station offline outside these hours is not an incident.

    ``windows`` is a list of ``{"days": [1..7] (ISO weekdays, Monday = 1), "start": "HH:MM",
    "end": "HH:MM"}`` in ``timezone``; an ``end`` at or before ``start`` runs past midnight.
    """

    __tablename__ = "facility_schedules"

    facility_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Ho_Chi_Minh")
    windows: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class StationSample(Base):
    """Heartbeat history: at most one sample per station per ``bucket`` (``ops.history_step_s``).

    Older samples are thinned to one per ``ops.history_coarse_step_s`` and removed after
    ``ops.history_days`` (``server/ops/monitor.py``). Counters (``scans_today``,
    ``mqtt_reconnects``) are the station's running totals: rates come from differences.
    """

    __tablename__ = "station_samples"
    __table_args__ = (
        UniqueConstraint("station_id", "bucket", name="uq_station_samples_bucket"),
        Index("ix_station_samples_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(63))
    bucket: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column()
    uptime_s: Mapped[float | None] = mapped_column(Float)
    outbox_depth: Mapped[int | None] = mapped_column(Integer)
    oldest_pending_age_s: Mapped[float | None] = mapped_column(Float)
    scans_today: Mapped[int | None] = mapped_column(Integer)
    cpu_temp_c: Mapped[float | None] = mapped_column(Float)
    load_avg: Mapped[float | None] = mapped_column(Float)
    mem_available_mb: Mapped[float | None] = mapped_column(Float)
    disk_free_mb: Mapped[float | None] = mapped_column(Float)
    wifi_signal_dbm: Mapped[float | None] = mapped_column(Float)
    mqtt_reconnects: Mapped[int | None] = mapped_column(Integer)
    under_voltage: Mapped[bool | None] = mapped_column(Boolean)
    throttled: Mapped[bool | None] = mapped_column(Boolean)
    clock_offset_s: Mapped[float | None] = mapped_column(Float)


class StationOpsState(Base):
    """What the ops monitor derived for a station: its status and since when, and how many
    records are missing from its sequence and since when."""

    __tablename__ = "station_ops"

    station_id: Mapped[str] = mapped_column(
        ForeignKey("stations.station_id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    status_since: Mapped[datetime] = mapped_column(default=utcnow)
    gap_missing: Mapped[int] = mapped_column(BigInteger, default=0)
    gap_since: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """An alert about a station: ``open`` -> ``acknowledged`` -> ``resolved``.

    ``active_key`` (``<station>/<kind>``) is set while the alert is not resolved and unique, so a
    condition has at most one live alert; it is cleared on resolution. ``resolved_by`` is null
    when the condition cleared by itself.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'acknowledged', 'resolved')", name="ck_alert_state"),
        CheckConstraint("severity IN ('warning', 'critical')", name="ck_alert_severity"),
        Index("ix_alerts_station_opened", "station_id", "opened_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    station_id: Mapped[str] = mapped_column(String(63))
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    active_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    opened_at: Mapped[datetime] = mapped_column(index=True)
    last_seen_at: Mapped[datetime] = mapped_column()
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str | None] = mapped_column(String(500))


class OpsSetting(Base):
    """An alert threshold changed in the admin UI, overriding the configuration file's value."""

    __tablename__ = "ops_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class StationCommand(Base):
    """A remote command: ``queued`` -> ``sent`` -> ``succeeded`` / ``failed``, or ``expired``.

    Sent when the station is online (again after every new birth until answered); never sent
    after ``expires_at``. ``result`` is the station's ``CommandResult.detail``.
    """

    __tablename__ = "station_commands"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'sent', 'succeeded', 'failed', 'expired')",
            name="ck_station_command_state",
        ),
        Index("ix_station_commands_station_created", "station_id", "created_at"),
    )

    command_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column()
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    send_count: Mapped[int] = mapped_column(Integer, default=0)
    answered_at: Mapped[datetime | None] = mapped_column()
    ok: Mapped[bool | None] = mapped_column(Boolean)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
