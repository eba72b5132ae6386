"""Enrollment tokens and enrolled stations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("facility", sa.String(40), nullable=False),
        sa.Column("station_id", sa.String(63)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(100)),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("used_by_station", sa.String(63)),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("token_sha256", name="uq_enrollment_tokens_token_sha256"),
    )
    op.create_index("ix_enrollment_tokens_facility", "enrollment_tokens", ["facility"])
    op.create_table(
        "station_enrollments",
        sa.Column("station_id", sa.String(63), primary_key=True),
        sa.Column("facility", sa.String(40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("credentials_issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("credentials_generation", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(253)),
        sa.Column("decommissioned_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_station_enrollments_facility", "station_enrollments", ["facility"])


def downgrade() -> None:
    op.drop_table("station_enrollments")
    op.drop_table("enrollment_tokens")
