"""claim index covers the held-back test

The claim scans pending deliveries oldest due first and steps over those of held-back
endpoints; with project_id and stage_id in the index it does so without reading each row.
Only the index is rebuilt (no table copy, even on SQLite).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_state_due")
        batch_op.create_index(
            "ix_deliveries_state_due", ["state", "due_at", "project_id", "stage_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_state_due")
        batch_op.create_index("ix_deliveries_state_due", ["state", "due_at"], unique=False)
