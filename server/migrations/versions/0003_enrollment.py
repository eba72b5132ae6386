"""Enrollment tokens (per sampling facility of the organisation tree) and enrolled stations.

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

Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("facility_id", sa.Integer(), sa.ForeignKey("organisations.id"), nullable=False),
        sa.Column("station_id", sa.String(63), sa.ForeignKey("stations.station_id")),
        sa.Column("station_name", sa.String(200)),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("expires_at", Ts, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("used_at", Ts),
        sa.Column("used_by_station", sa.String(63)),
        sa.Column("cancelled_at", Ts),
        sa.UniqueConstraint("token_sha256", name="uq_enrollment_tokens_token_sha256"),
    )
    op.create_index("ix_enrollment_tokens_facility_id", "enrollment_tokens", ["facility_id"])
    op.create_table(
        "station_enrollments",
        sa.Column(
            "station_id", sa.String(63), sa.ForeignKey("stations.station_id"), primary_key=True
        ),
        sa.Column("prefix", sa.String(40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", Ts, nullable=False),
        sa.Column("credentials_issued_at", Ts, nullable=False),
        sa.Column("credentials_generation", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(253)),
        sa.Column("decommissioned_at", Ts),
        sa.UniqueConstraint("prefix", "number", name="uq_station_enrollments_prefix_number"),
    )


def downgrade() -> None:
    op.drop_table("station_enrollments")
    op.drop_table("enrollment_tokens")
