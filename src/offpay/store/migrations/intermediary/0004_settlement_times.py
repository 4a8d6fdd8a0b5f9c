"""settlement times

Revision ID: intermediary_0004
Revises: intermediary_0003
Create Date: 2026-12-05 05:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intermediary_0004"
down_revision: str | None = "intermediary_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 16: a payment's settlement records are read with the time they were written.
    for table in ("debits", "credits"):
        op.add_column(table, sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in ("credits", "debits"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("recorded_at")
