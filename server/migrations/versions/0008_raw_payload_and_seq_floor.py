"""The event log keeps each record's payload as received; the seq floor counts every seq heard.

- ``records.payload``: the message bytes exactly as received, instead of ``data`` re-encoded
  from the parsed record. Rows already stored get a payload rebuilt from their columns (the
  original bytes were not kept). ``ix_records_station_id`` goes: ``uq_records_station_seq``
  starts with ``station_id`` and serves the same lookups.
- ``stations.seq_seen``: the highest seq heard of outside ``records`` (a record kept as
  rejected and acknowledged, a heartbeat's ``last_seq``), filled from what is stored.
- ``rejected_messages.collides_with``: the record holding the (station, seq) a rejected record
  also used; filled for the collisions already kept.
- ``ix_persons_name`` goes: the search matches names with ``lower(name) LIKE '%...%'``, which
  no b-tree index serves, and every new person paid for it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ENVELOPE = (
    "'v', 1, 'record_id', record_id, 'station_id', station_id, 'seq', seq, "
    "'boot_id', boot_id, 'wall_time', wall_time, 'mono_ns', mono_ns, "
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("stations") as batch:
        batch.add_column(sa.Column("seq_seen", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("rejected_messages") as batch:
        batch.add_column(sa.Column("collides_with", sa.String(36)))
        batch.create_index("ix_rejected_messages_collides_with", ["collides_with"])
    op.execute(
        "UPDATE rejected_messages SET collides_with = (SELECT r.record_id FROM records r "
        "WHERE r.station_id = rejected_messages.station_id AND r.seq = rejected_messages.seq) "
        "WHERE record_id IS NOT NULL AND reason LIKE 'seq % already used by another record%'"
    )
    last_seq = (
        "CAST(heartbeat ->> 'last_seq' AS BIGINT)"
        if postgres
        else "CAST(json_extract(heartbeat, '$.last_seq') AS INTEGER)"
    )
    op.execute(
        "UPDATE stations SET seq_seen = COALESCE((SELECT max(r.seq) FROM rejected_messages r "
        "WHERE r.station_id = stations.station_id AND r.record_id IS NOT NULL), 0)"
    )
    op.execute(
        f"UPDATE stations SET seq_seen = {last_seq} "
        f"WHERE heartbeat IS NOT NULL AND {last_seq} > seq_seen"
    )
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("payload", sa.LargeBinary()))
    if postgres:
        op.execute(
            "UPDATE records SET payload = convert_to(json_build_object("
            f"{_ENVELOPE}'clock_synced', clock_synced, 'kind', kind, 'code', code, "
            "'data', data)::text, 'UTF8')"
        )
    else:
        op.execute(
            "UPDATE records SET payload = CAST(json_object("
            f"{_ENVELOPE}'clock_synced', json(CASE WHEN clock_synced THEN 'true' "
            "ELSE 'false' END), 'kind', kind, 'code', code, 'data', json(data)) AS BLOB)"
        )
    with op.batch_alter_table("records") as batch:
        batch.alter_column("payload", existing_type=sa.LargeBinary(), nullable=False)
        batch.drop_column("data")
        batch.drop_index("ix_records_station_id")
    op.drop_index("ix_persons_name", table_name="persons")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_index("ix_persons_name", "persons", ["name"])
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("data", sa.JSON()))
    if postgres:
        op.execute("UPDATE records SET data = convert_from(payload, 'UTF8')::json -> 'data'")
    else:
        op.execute("UPDATE records SET data = json_extract(CAST(payload AS TEXT), '$.data')")
    op.execute("UPDATE records SET data = '{}' WHERE data IS NULL")
    with op.batch_alter_table("records") as batch:
        batch.alter_column("data", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("payload")
        batch.create_index("ix_records_station_id", ["station_id"])
    with op.batch_alter_table("rejected_messages") as batch:
        batch.drop_index("ix_rejected_messages_collides_with")
        batch.drop_column("collides_with")
    with op.batch_alter_table("stations") as batch:
        batch.drop_column("seq_seen")
