"""The data model: organisations, station registry, persons, tubes, pools, sample lifecycle,
results, staff, users and roles, sessions and tokens, login attempts, audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "organisations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("facility_kind", sa.String(16)),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.CheckConstraint("kind IN ('province', 'district', 'facility')", name="ck_org_kind"),
        sa.CheckConstraint(
            "(kind = 'facility' AND facility_kind IN ('sampling', 'lab', 'both')) OR "
            "(kind <> 'facility' AND facility_kind IS NULL)",
            name="ck_org_facility_kind",
        ),
    )
    op.create_index("ix_organisations_parent_id", "organisations", ["parent_id"])
    op.create_index("ix_organisations_path", "organisations", ["path"])

    with op.batch_alter_table("stations") as batch:
        batch.add_column(sa.Column("facility_id", sa.Integer()))
        batch.add_column(sa.Column("name", sa.String(200)))
        batch.add_column(
            sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(
            sa.Column("record_count", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("first_seen_at", Ts))
        batch.add_column(sa.Column("created_at", Ts))
        batch.add_column(sa.Column("updated_at", Ts))
        batch.create_foreign_key(
            "fk_stations_facility_id", "organisations", ["facility_id"], ["id"]
        )
        batch.create_index("ix_stations_facility_id", ["facility_id"])
    op.execute(
        "UPDATE stations SET record_count = "
        "(SELECT count(*) FROM records WHERE records.station_id = stations.station_id)"
    )

    with op.batch_alter_table("rejected_messages") as batch:
        batch.add_column(sa.Column("record_id", sa.String(36)))
        batch.add_column(sa.Column("seq", sa.BigInteger()))
        batch.create_index("ix_rejected_messages_record_id", ["record_id"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("locale", sa.String(5), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.Column("password_changed_at", Ts, nullable=False),
        sa.Column("last_login_at", Ts),
    )
    op.create_table(
        "user_roles",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column(
            "organisation_id", sa.Integer(), sa.ForeignKey("organisations.id"), nullable=False
        ),
        sa.Column("created_at", Ts, nullable=False),
        sa.UniqueConstraint("user_id", "role", "organisation_id", name="uq_user_roles"),
        sa.CheckConstraint(
            "role IN ('provincial_admin', 'facility_manager', 'sampling_staff', 'lab_staff', "
            "'ops', 'technician')",
            name="ck_user_role",
        ),
    )
    op.create_index("ix_user_roles_user_id", "user_roles", ["user_id"])
    op.create_index("ix_user_roles_organisation_id", "user_roles", ["organisation_id"])
    op.create_table(
        "auth_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(100)),
        sa.Column("csrf_token", sa.String(64)),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("expires_at", Ts, nullable=False),
        sa.Column("last_used_at", Ts),
        sa.Column("revoked_at", Ts),
        sa.Column("remote_addr", sa.String(64)),
        sa.CheckConstraint("kind IN ('session', 'api')", name="ck_token_kind"),
    )
    op.create_index("ix_auth_tokens_user_id", "auth_tokens", ["user_id"])
    op.create_index("ix_auth_tokens_expires_at", "auth_tokens", ["expires_at"])
    op.create_table(
        "login_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", Ts, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_login_attempts_username_at", "login_attempts", ["username", "at"])
    op.create_index("ix_login_attempts_addr_at", "login_attempts", ["remote_addr", "at"])
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", Ts, nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("organisation_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("before", sa.JSON()),
        sa.Column("after", sa.JSON()),
        sa.Column("remote_addr", sa.String(64)),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_user_id", "audit_log", ["user_id"])
    op.create_index("ix_audit_log_organisation_id", "audit_log", ["organisation_id"])

    op.create_table(
        "staff",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("staff_code", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200)),
        sa.Column("facility_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", Ts),
        sa.Column("last_seen_at", Ts),
        sa.Column("last_station_id", sa.String(63)),
    )
    op.create_index("ix_staff_facility_id", "staff", ["facility_id"])
    op.create_table(
        "persons",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("name_reliable", sa.Boolean(), nullable=False),
        sa.Column("birth_date", sa.String(10)),
        sa.Column("sex", sa.String(8)),
        sa.Column("address", sa.String(300)),
        sa.Column("document_number", sa.String(32)),
        sa.Column("old_id", sa.String(16)),
        sa.Column("issue_date", sa.String(10)),
        sa.Column("ext", sa.Text()),
        sa.Column("first_seen_at", Ts, nullable=False),
        sa.Column("last_seen_at", Ts, nullable=False),
        sa.UniqueConstraint("key_type", "key", name="uq_persons_key"),
        sa.CheckConstraint("key_type IN ('cccd', 'qid', 'document')", name="ck_person_key_type"),
    )
    op.create_index("ix_persons_key", "persons", ["key"])
    op.create_index("ix_persons_name", "persons", ["name"])
    op.create_table(
        "tubes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("station_id", sa.String(63), sa.ForeignKey("stations.station_id")),
        sa.Column("facility_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("lab_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("test_kind", sa.String(16)),
        sa.Column("mode", sa.String(8)),
        sa.Column("pool_size", sa.Integer()),
        sa.Column("staff_code", sa.String(64)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("result", sa.String(16)),
        sa.Column("open_count", sa.Integer(), nullable=False),
        sa.Column("opened_at", Ts),
        sa.Column("opened_record_id", sa.String(36)),
        sa.Column("closed_at", Ts),
        sa.Column("closed_record_id", sa.String(36)),
        sa.Column("close_reason", sa.String(16)),
        sa.Column("persons_at_close", sa.Integer()),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'collected', 'shipped', 'received_at_lab', 'resulted')",
            name="ck_tube_status",
        ),
    )
    for col in ("station_id", "facility_id", "lab_id", "status", "result", "opened_at"):
        op.create_index(f"ix_tubes_{col}", "tubes", [col])
    op.create_table(
        "pool_members",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tube_id", BigId, sa.ForeignKey("tubes.id"), nullable=False),
        sa.Column("person_id", BigId, sa.ForeignKey("persons.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False, unique=True),
        sa.Column("station_id", sa.String(63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("retest", sa.Boolean(), nullable=False),
        sa.Column("staff_code", sa.String(64)),
        sa.Column("added_at", Ts, nullable=False),
        sa.Column("undone_at", Ts),
        sa.Column("undo_record_id", sa.String(36)),
        sa.UniqueConstraint("station_id", "seq", name="uq_pool_members_station_seq"),
    )
    op.create_index("ix_pool_members_tube_id", "pool_members", ["tube_id"])
    op.create_index("ix_pool_members_person_id", "pool_members", ["person_id"])
    op.create_table(
        "pool_undos",
        sa.Column("station_id", sa.String(63), primary_key=True),
        sa.Column("undone_seq", sa.BigInteger(), primary_key=True),
        sa.Column("undo_record_id", sa.String(36), nullable=False, unique=True),
        sa.Column("tube_code", sa.String(64), nullable=False),
        sa.Column("person_key", sa.String(64)),
        sa.Column("undone_at", Ts, nullable=False),
    )
    op.create_table(
        "sample_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tube_id", BigId, sa.ForeignKey("tubes.id"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at", Ts, nullable=False),
        sa.Column("recorded_at", Ts, nullable=False),
        sa.Column("facility_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("station_id", sa.String(63)),
        sa.Column("record_id", sa.String(36)),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("details", sa.JSON()),
        sa.CheckConstraint(
            "kind IN ('collected', 'shipped', 'received_at_lab', 'resulted')",
            name="ck_sample_event_kind",
        ),
        sa.UniqueConstraint("record_id", "kind", name="uq_sample_events_record_kind"),
    )
    op.create_index("ix_sample_events_tube_id", "sample_events", ["tube_id"])
    op.create_index("ix_sample_events_facility_id", "sample_events", ["facility_id"])
    op.create_index("ix_sample_events_kind_at", "sample_events", ["kind", "at"])
    op.create_table(
        "results",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("tube_id", BigId, sa.ForeignKey("tubes.id"), nullable=False),
        sa.Column("value", sa.String(16), nullable=False),
        sa.Column("test_kind", sa.String(16)),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("facility_id", sa.Integer(), sa.ForeignKey("organisations.id")),
        sa.Column("station_id", sa.String(63)),
        sa.Column("record_id", sa.String(36), unique=True),
        sa.Column("seq", sa.BigInteger()),
        sa.Column("entered_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("reported_at", Ts, nullable=False),
        sa.Column("entered_at", Ts, nullable=False),
        sa.Column("supersedes_id", BigId, sa.ForeignKey("results.id")),
        sa.Column("superseded_at", Ts),
        sa.Column("correction_reason", sa.Text()),
        sa.CheckConstraint("value IN ('positive', 'negative', 'invalid')", name="ck_result_value"),
        sa.CheckConstraint("source IN ('station', 'lab', 'import')", name="ck_result_source"),
    )
    op.create_index("ix_results_tube_id", "results", ["tube_id"])
    op.create_index("ix_results_facility_id", "results", ["facility_id"])
    op.create_index("ix_results_reported_at", "results", ["reported_at"])


def downgrade() -> None:
    for table in (
        "results",
        "sample_events",
        "pool_undos",
        "pool_members",
        "tubes",
        "persons",
        "staff",
        "audit_log",
        "login_attempts",
        "auth_tokens",
        "user_roles",
        "users",
    ):
        op.drop_table(table)
    with op.batch_alter_table("rejected_messages") as batch:
        batch.drop_index("ix_rejected_messages_record_id")
        batch.drop_column("seq")
        batch.drop_column("record_id")
    with op.batch_alter_table("stations") as batch:
        batch.drop_index("ix_stations_facility_id")
        batch.drop_constraint("fk_stations_facility_id", type_="foreignkey")
        for col in (
            "updated_at",
            "created_at",
            "first_seen_at",
            "record_count",
            "active",
            "name",
            "facility_id",
        ):
            batch.drop_column(col)
    op.drop_table("organisations")
