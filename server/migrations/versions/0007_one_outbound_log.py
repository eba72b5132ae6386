"""One outbound transport: alert deliveries join result notifications in ``notifications``
(with a ``target``) and ``notification_deliveries``; ``outbound_deliveries`` is dropped.

Existing rows stay readable: every outbound delivery becomes a message of its target with the
same event, payload, state (``delivered`` -> ``sent``), attempts, times and last error, under
``dedup_key = 'outbound:<old id>'``; when it had been attempted, its last attempt (as the old
table summarised it: status and error, not the duration) becomes one delivery-log row dated
when it was delivered, else when it was created. Its delivery id changes to ``n-<new id>``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "notifications",
        sa.Column("target", sa.String(32), nullable=False, server_default="results"),
    )
    op.execute(
        "INSERT INTO notifications (target, event, dedup_key, payload, status, attempts, "
        "next_attempt_at, created_at, sent_at, last_error) "
        "SELECT target, event, 'outbound:' || CAST(id AS VARCHAR(20)), payload, "
        "CASE state WHEN 'delivered' THEN 'sent' ELSE state END, attempts, next_attempt_at, "
        "created_at, delivered_at, last_error FROM outbound_deliveries ORDER BY id"
    )
    op.execute(
        "INSERT INTO notification_deliveries (notification_id, attempt, at, hook, ok, "
        "status_code, error, duration_ms) "
        "SELECT n.id, o.attempts, COALESCE(o.delivered_at, o.created_at), 'webhook', "
        "o.state = 'delivered', o.last_status, o.last_error, 0 "
        "FROM outbound_deliveries o "
        "JOIN notifications n ON n.dedup_key = 'outbound:' || CAST(o.id AS VARCHAR(20)) "
        "WHERE o.attempts > 0 ORDER BY o.id"
    )
    op.drop_table("outbound_deliveries")


def downgrade() -> None:
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
    # Messages of other targets than results go back (their URL was not kept: empty).
    op.execute(
        "INSERT INTO outbound_deliveries (target, url, event, payload, state, attempts, "
        "next_attempt_at, last_status, last_error, created_at, delivered_at) "
        "SELECT n.target, '', n.event, n.payload, "
        "CASE n.status WHEN 'sent' THEN 'delivered' ELSE n.status END, n.attempts, "
        "n.next_attempt_at, (SELECT d.status_code FROM notification_deliveries d "
        "WHERE d.notification_id = n.id ORDER BY d.attempt DESC LIMIT 1), "
        "n.last_error, n.created_at, n.sent_at "
        "FROM notifications n WHERE n.target <> 'results' ORDER BY n.id"
    )
    op.execute(
        "DELETE FROM notification_deliveries WHERE notification_id IN "
        "(SELECT id FROM notifications WHERE target <> 'results')"
    )
    op.execute("DELETE FROM notifications WHERE target <> 'results'")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("target")
