"""Initial schema: the tables as they stood when offpay adopted migrations.

Revision ID: central_0001
Revises: (first revision)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "central_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consumed_tokens",
        sa.Column("id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("transition", sa.LargeBinary(length=32), nullable=False),
        sa.Column("element", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "institutions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("reserve", sa.BigInteger(), nullable=False),
        sa.Column("holdings", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("holdings >= 0", name="holdings_not_negative"),
        sa.CheckConstraint("reserve >= 0", name="reserve_not_negative"),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "issuance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "liquidity_pool",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("outstanding", sa.BigInteger(), nullable=False),
        sa.Column("peak_outstanding", sa.BigInteger(), nullable=False),
        sa.Column("drawn_total", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("available >= 0", name="pool_available_not_negative"),
        sa.CheckConstraint("outstanding >= 0", name="pool_outstanding_not_negative"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "minted_tokens",
        sa.Column("id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "notary",
        sa.Column("tx_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("evidence", sa.LargeBinary(length=32), nullable=False),
        sa.Column("payer_institution", sa.String(length=64), nullable=False),
        sa.Column("payee_institution", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("recorded_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("tx_id"),
    )
    op.create_table(
        "pool_loans",
        sa.Column("loan_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.Column("drawn", sa.BigInteger(), nullable=False),
        sa.Column("repaid", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("repaid <= drawn", name="loan_not_overpaid"),
        sa.PrimaryKeyConstraint("loan_id"),
    )
    op.create_table(
        "redeemed_tokens",
        sa.Column("id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "revoked_devices",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("version"),
        sa.UniqueConstraint("device"),
    )
    op.create_table(
        "seen_requests",
        sa.Column("sender", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.LargeBinary(length=32), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sender", "nonce"),
    )


def downgrade() -> None:
    op.drop_table("seen_requests")
    op.drop_table("revoked_devices")
    op.drop_table("redeemed_tokens")
    op.drop_table("pool_loans")
    op.drop_table("notary")
    op.drop_table("minted_tokens")
    op.drop_table("liquidity_pool")
    op.drop_table("issuance")
    op.drop_table("institutions")
    op.drop_table("consumed_tokens")
