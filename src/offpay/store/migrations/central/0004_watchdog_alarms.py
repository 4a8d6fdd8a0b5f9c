"""watchdog alarms

Revision ID: central_0004
Revises: central_0003
Create Date: 2026-12-05 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "central_0004"
down_revision: str | None = "central_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 18: the watchdog's alarms survive a restart (service/watchdog.py).
    _alarms_table()


def downgrade() -> None:
    op.drop_table("watchdog_alarms")


def _alarms_table() -> None:
    op.create_table(
        "watchdog_alarms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invariant", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=1000), nullable=False),
        sa.Column("records", sa.String(length=4000), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clear_reason", sa.String(length=500), nullable=True),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
