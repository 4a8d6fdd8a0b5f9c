"""declines, refunds, and the evidence of credited payments

Revision ID: intermediary_0002
Revises: intermediary_0001
Create Date: 2026-11-22 04:03:51.464742
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intermediary_0002"
down_revision: str | None = "intermediary_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 3: payee devices declare declined requests; declined payments are refunded.
    op.create_table(
        "declines",
        sa.Column("request_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_table(
        "refunds",
        sa.Column("refund_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("tx_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("refund_id"),
        sa.UniqueConstraint("tx_id"),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refunds_device_id"), ["device_id"], unique=False)

    with op.batch_alter_table("credits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("request_id", sa.LargeBinary(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_credits_request_id"), ["request_id"], unique=False)


def downgrade() -> None:
    # Issue 3: payee devices declare declined requests; declined payments are refunded.
    with op.batch_alter_table("credits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credits_request_id"))
        batch_op.drop_column("request_id")
        batch_op.drop_column("payment")

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refunds_device_id"))

    op.drop_table("refunds")
    op.drop_table("declines")
