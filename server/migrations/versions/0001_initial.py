"""Stations, records and rejected messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stations",
        sa.Column("station_id", sa.String(63), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("bd_seq", sa.BigInteger(), nullable=False),
        sa.Column("agent_version", sa.String(32)),
        sa.Column("last_seen_at", sa.DateTime(timezone=True)),
        sa.Column("max_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("outbox_depth", sa.Integer()),
        sa.Column("heartbeat", sa.JSON()),
    )
    op.create_table(
        "records",
        sa.Column("record_id", sa.String(36), primary_key=True),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=False),
        sa.Column("wall_time", sa.Float(), nullable=False),
        sa.Column("mono_ns", sa.BigInteger(), nullable=False),
        sa.Column("clock_synced", sa.Boolean(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("code", sa.Text()),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("station_id", "seq", name="uq_records_station_seq"),
    )
    op.create_index("ix_records_station_id", "records", ["station_id"])
    op.create_index("ix_records_received_at", "records", ["received_at"])
    op.create_table(
        "rejected_messages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("station_id", sa.String(63)),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_rejected_messages_received_at", "rejected_messages", ["received_at"])


def downgrade() -> None:
    op.drop_table("rejected_messages")
    op.drop_table("records")
    op.drop_table("stations")
