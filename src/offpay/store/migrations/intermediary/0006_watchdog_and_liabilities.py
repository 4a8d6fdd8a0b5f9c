"""watchdog alarms and proof of liabilities

Revision ID: intermediary_0006
Revises: intermediary_0005
Create Date: 2026-12-05 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intermediary_0006"
down_revision: str | None = "intermediary_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 18: the watchdog's alarms survive a restart (service/watchdog.py); the published
    # liability commitments and their leaves, for customers' inclusion proofs (liabilities/).
    _alarms_table()
    op.create_table(
        "liability_commitments",
        sa.Column("period", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("signed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("period"),
    )
    op.create_table(
        "liability_leaves",
        sa.Column("period", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("salt", sa.LargeBinary(length=32), nullable=False),
        sa.Column("online", sa.BigInteger(), nullable=False),
        sa.Column("shadow", sa.BigInteger(), nullable=False),
        sa.Column("merchant", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("period", "position"),
    )
    op.create_index(
        "ix_liability_leaves_customer_id", "liability_leaves", ["customer_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_liability_leaves_customer_id", table_name="liability_leaves")
    op.drop_table("liability_leaves")
    op.drop_table("liability_commitments")
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
