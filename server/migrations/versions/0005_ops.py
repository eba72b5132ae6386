"""Ops: facility schedules, heartbeat history, station ops state, alerts, alert thresholds,
remote commands, outbound deliveries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "facility_schedules",
        sa.Column("facility_id", sa.Integer(), sa.ForeignKey("organisations.id"), primary_key=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("windows", sa.JSON(), nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.Column("updated_by", sa.Integer(), sa.ForeignKey("users.id")),
    )
    op.create_table(
        "station_samples",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("at", Ts, nullable=False),
        sa.Column("uptime_s", sa.Float()),
        sa.Column("outbox_depth", sa.Integer()),
        sa.Column("oldest_pending_age_s", sa.Float()),
        sa.Column("scans_today", sa.Integer()),
        sa.Column("cpu_temp_c", sa.Float()),
        sa.Column("load_avg", sa.Float()),
        sa.Column("mem_available_mb", sa.Float()),
        sa.Column("disk_free_mb", sa.Float()),
        sa.Column("wifi_signal_dbm", sa.Float()),
        sa.Column("mqtt_reconnects", sa.Integer()),
        sa.Column("under_voltage", sa.Boolean()),
        sa.Column("throttled", sa.Boolean()),
        sa.Column("clock_offset_s", sa.Float()),
        sa.UniqueConstraint("station_id", "bucket", name="uq_station_samples_bucket"),
    )
    op.create_index("ix_station_samples_at", "station_samples", ["at"])
    op.create_table(
        "station_ops",
        sa.Column(
            "station_id",
            sa.String(63),
            sa.ForeignKey("stations.station_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_since", Ts, nullable=False),
        sa.Column("gap_missing", sa.BigInteger(), nullable=False),
        sa.Column("gap_since", Ts),
        sa.Column("updated_at", Ts, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("facility_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("active_key", sa.String(100), unique=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("opened_at", Ts, nullable=False),
        sa.Column("last_seen_at", Ts, nullable=False),
        sa.Column("acknowledged_at", Ts),
        sa.Column("acknowledged_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("resolved_at", Ts),
        sa.Column("resolved_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("note", sa.String(500)),
        sa.CheckConstraint("state IN ('open', 'acknowledged', 'resolved')", name="ck_alert_state"),
        sa.CheckConstraint("severity IN ('warning', 'critical')", name="ck_alert_severity"),
    )
    op.create_index("ix_alerts_station_opened", "alerts", ["station_id", "opened_at"])
    op.create_index("ix_alerts_facility_id", "alerts", ["facility_id"])
    op.create_index("ix_alerts_state", "alerts", ["state"])
    op.create_index("ix_alerts_opened_at", "alerts", ["opened_at"])
    op.create_table(
        "ops_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.Column("updated_by", sa.Integer(), sa.ForeignKey("users.id")),
    )
    op.create_table(
        "station_commands",
        sa.Column("command_id", sa.String(64), primary_key=True),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("expires_at", Ts, nullable=False),
        sa.Column("sent_at", Ts),
        sa.Column("send_count", sa.Integer(), nullable=False),
        sa.Column("answered_at", Ts),
        sa.Column("ok", sa.Boolean()),
        sa.Column("result", sa.JSON()),
        sa.CheckConstraint(
            "state IN ('queued', 'sent', 'succeeded', 'failed', 'expired')",
            name="ck_station_command_state",
        ),
    )
    op.create_index(
        "ix_station_commands_station_created", "station_commands", ["station_id", "created_at"]
    )
    op.create_index("ix_station_commands_state", "station_commands", ["state"])
    op.create_table(
        "outbound_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Ts, nullable=False),
        sa.Column("last_status", sa.Integer()),
        sa.Column("last_error", sa.String(500)),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("delivered_at", Ts),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name="ck_outbound_delivery_state"
        ),
    )
    op.create_index(
        "ix_outbound_deliveries_state_next", "outbound_deliveries", ["state", "next_attempt_at"]
    )
    op.create_index("ix_outbound_deliveries_created_at", "outbound_deliveries", ["created_at"])


def downgrade() -> None:
    for name in (
        "outbound_deliveries",
        "station_commands",
        "ops_settings",
        "alerts",
        "station_ops",
        "station_samples",
        "facility_schedules",
    ):
        op.drop_table(name)
