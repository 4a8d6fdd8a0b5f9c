"""http answers

Revision ID: central_0002
Revises: central_0001
Create Date: 2026-11-22 04:12:03.183017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "central_0002"
down_revision: str | None = "central_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 5: first answers of a party behind HTTP, per sender and idempotency key.
    op.create_table(
        "http_answers",
        sa.Column("sender", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("media_type", sa.String(length=40), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sender", "key"),
    )


def downgrade() -> None:
    # Issue 5: first answers of a party behind HTTP, per sender and idempotency key.
    op.drop_table("http_answers")
