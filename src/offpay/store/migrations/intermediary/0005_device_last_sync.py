"""device last sync time

Revision ID: intermediary_0005
Revises: intermediary_0004
Create Date: 2026-12-05 08:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intermediary_0005"
down_revision: str | None = "intermediary_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 17: the books show when each device last synchronised; devices that synchronised
    # before this column existed show no time until their next sync.
    op.add_column("devices", sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_sync_at")
