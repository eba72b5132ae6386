"""At most one current result per tube (a partial unique index); persons found by the document
number their QR carried (an index for the public lookup).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CURRENT = sa.text("superseded_at IS NULL")


def upgrade() -> None:
    # Concurrent first entries could leave two current rows for one tube before this index:
    # the newest stays current (it is what tubes.result mirrors), the others become history.
    op.execute(
        "UPDATE results SET superseded_at = CURRENT_TIMESTAMP "
        "WHERE superseded_at IS NULL AND id < ("
        "SELECT max(r2.id) FROM results r2 "
        "WHERE r2.tube_id = results.tube_id AND r2.superseded_at IS NULL)"
    )
    op.create_index(
        "uq_results_current_tube",
        "results",
        ["tube_id"],
        unique=True,
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )
    op.create_index("ix_persons_document_number", "persons", ["document_number"])


def downgrade() -> None:
    op.drop_index("ix_persons_document_number", table_name="persons")
    op.drop_index("uq_results_current_tube", table_name="results")
