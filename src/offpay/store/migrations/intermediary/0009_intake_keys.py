"""intermediary intake keys

Revision ID: intermediary_0009
Revises: intermediary_0008
Create Date: 2026-12-05 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intermediary_0009"
down_revision: str | None = "intermediary_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 19, point 3: the X25519 keys devices seal their sessions and uploads to, one row
    # per version (offpay.bank.intake_key). Made when the engine first opens the database.
    op.create_table(
        "intake_keys",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("accepted_until", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("version"),
    )


def downgrade() -> None:
    op.drop_table("intake_keys")
