"""notary times

Revision ID: central_0003
Revises: central_0002
Create Date: 2026-12-05 05:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "central_0003"
down_revision: str | None = "central_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 16: a payment's settlement records are read with the time they were written.
    op.add_column("notary", sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notary") as batch:
        batch.drop_column("recorded_at")
