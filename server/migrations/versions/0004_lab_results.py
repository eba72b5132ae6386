"""Lab reception (batches), result imports, self-declarations, public lookups, notifications
and their delivery log, generated report files, station activity, server-made secrets.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "lab_batches",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("origin_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("lab_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("shipped_at", Ts),
        sa.Column("received_at", Ts),
        sa.Column("closed_at", Ts),
        sa.Column("station_id", sa.String(63)),
        sa.CheckConstraint(
            "status IN ('packing', 'shipped', 'receiving', 'closed')", name="ck_lab_batch_status"
        ),
    )
    op.create_index("ix_lab_batches_code_status", "lab_batches", ["code", "status"])
    op.create_index("ix_lab_batches_origin_id", "lab_batches", ["origin_id"])
    op.create_index("ix_lab_batches_lab_id", "lab_batches", ["lab_id"])
    op.create_table(
        "lab_batch_tubes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.Integer(), sa.ForeignKey("lab_batches.id"), nullable=False),
        sa.Column("tube_id", BigId, sa.ForeignKey("tubes.id"), nullable=False),
        sa.Column("expected", sa.Boolean(), nullable=False),
        sa.Column("packed_at", Ts),
        sa.Column("received_at", Ts),
        sa.Column("received_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("station_id", sa.String(63)),
        sa.Column("record_id", sa.String(36)),
        sa.UniqueConstraint("batch_id", "tube_id", name="uq_lab_batch_tubes"),
    )
    op.create_index("ix_lab_batch_tubes_batch_id", "lab_batch_tubes", ["batch_id"])
    op.create_index("ix_lab_batch_tubes_tube_id", "lab_batch_tubes", ["tube_id"])
    op.create_table(
        "result_imports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("lab_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("uploaded_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("uploaded_at", Ts, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_applied", sa.Integer(), nullable=False),
        sa.Column("rows_unchanged", sa.Integer(), nullable=False),
        sa.Column("rows_error", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.CheckConstraint("status IN ('applied', 'rejected')", name="ck_result_import_status"),
    )
    op.create_index("ix_result_imports_sha256", "result_imports", ["sha256"])
    op.create_index("ix_result_imports_lab_id", "result_imports", ["lab_id"])
    op.create_table(
        "declarations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("qid", sa.String(16), nullable=False, unique=True),
        sa.Column("lookup_code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("person_id", BigId, sa.ForeignKey("persons.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("birth_date", sa.String(10), nullable=False),
        sa.Column("sex", sa.String(8)),
        sa.Column("document_number", sa.String(32)),
        sa.Column("phone", sa.String(20)),
        sa.Column("address", sa.String(300)),
        sa.Column("on_behalf", sa.Boolean(), nullable=False),
        sa.Column("locale", sa.String(5), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
    )
    op.create_index("ix_declarations_person_id", "declarations", ["person_id"])
    op.create_index("ix_declarations_document_number", "declarations", ["document_number"])
    op.create_table(
        "lookup_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", Ts, nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_lookup_attempts_addr_at", "lookup_attempts", ["remote_addr", "at"])
    op.create_index("ix_lookup_attempts_key_at", "lookup_attempts", ["key_hash", "at"])
    op.create_table(
        "notifications",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("dedup_key", sa.String(128), nullable=False, unique=True),
        sa.Column("person_id", BigId, sa.ForeignKey("persons.id")),
        sa.Column("result_id", BigId, sa.ForeignKey("results.id")),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Ts, nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("sent_at", Ts),
        sa.Column("last_error", sa.String(500)),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed')", name="ck_notification_status"
        ),
    )
    op.create_index("ix_notifications_person_id", "notifications", ["person_id"])
    op.create_index("ix_notifications_result_id", "notifications", ["result_id"])
    op.create_index("ix_notifications_status_next", "notifications", ["status", "next_attempt_at"])
    op.create_table(
        "notification_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("notification_id", BigId, sa.ForeignKey("notifications.id"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", Ts, nullable=False),
        sa.Column("hook", sa.String(32), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("error", sa.String(500)),
        sa.Column("duration_ms", sa.Float(), nullable=False),
    )
    op.create_index(
        "ix_notification_deliveries_notification_id",
        "notification_deliveries",
        ["notification_id"],
    )
    op.create_table(
        "report_files",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("period_start", sa.String(10), nullable=False),
        sa.Column(
            "organisation_id", sa.Integer(), sa.ForeignKey("organisations.id"), nullable=False
        ),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("generated_at", Ts, nullable=False),
        sa.Column("generated_by", sa.String(100), nullable=False),
        sa.UniqueConstraint(
            "period", "period_start", "organisation_id", "format", name="uq_report_files"
        ),
        sa.CheckConstraint("period IN ('day', 'week', 'month')", name="ck_report_file_period"),
        sa.CheckConstraint("format IN ('xlsx', 'csv')", name="ck_report_file_format"),
    )
    op.create_index("ix_report_files_organisation_id", "report_files", ["organisation_id"])
    op.create_table(
        "station_activity",
        sa.Column("station_id", sa.String(63), primary_key=True),
        sa.Column("hour", Ts, primary_key=True),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
    )
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "server_secrets",
        "station_activity",
        "report_files",
        "notification_deliveries",
        "notifications",
        "lookup_attempts",
        "declarations",
        "result_imports",
        "lab_batch_tubes",
        "lab_batches",
    ):
        op.drop_table(table)
