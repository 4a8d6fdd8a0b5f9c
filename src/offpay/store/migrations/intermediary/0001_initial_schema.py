"""Initial schema: the tables as they stood when offpay adopted migrations.

Revision ID: intermediary_0001
Revises: (first revision)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intermediary_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("balance >= 0", name="balance_not_negative"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_accounts_customer_id", "accounts", ["customer_id"], unique=False)
    op.create_table(
        "anomalies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("tx_id", sa.LargeBinary(length=16), nullable=True),
        sa.Column("detail", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "awaited",
        sa.Column("tx_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("payer", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tx_id"),
    )
    op.create_index("ix_awaited_device_id", "awaited", ["device_id"], unique=False)
    op.create_table(
        "central_moves",
        sa.Column("nonce", sa.LargeBinary(length=16), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_table(
        "credits",
        sa.Column("tx_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("evidence", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("tx_id"),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "debits",
        sa.Column("tx_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("evidence", sa.LargeBinary(length=32), nullable=False),
        sa.Column("payment", sa.LargeBinary(), nullable=False),
        sa.Column("notarised", sa.Boolean(), nullable=False),
        sa.Column("credited", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("tx_id"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.String(length=160), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_session_no", sa.Integer(), nullable=False),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.Column("issued_no", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "instructions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("instruction_no", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_instructions_device_id", "instructions", ["device_id"], unique=False)
    op.create_table(
        "journal",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=160), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_journal_account_id", "journal", ["account_id"], unique=False)
    op.create_table(
        "losses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("tx_id", sa.LargeBinary(length=16), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("bound", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_losses_device_id", "losses", ["device_id"], unique=False)
    op.create_table(
        "policies",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("signed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "pool_loans",
        sa.Column("loan_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("outstanding", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.CheckConstraint("outstanding >= 0", name="loan_outstanding_not_negative"),
        sa.PrimaryKeyConstraint("loan_id"),
    )
    op.create_index("ix_pool_loans_device_id", "pool_loans", ["device_id"], unique=False)
    op.create_table(
        "pool_repays",
        sa.Column("nonce", sa.LargeBinary(length=16), nullable=False),
        sa.Column("loan_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_table(
        "reserve_moves",
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("reference"),
    )
    op.create_table(
        "seen_requests",
        sa.Column("sender", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.LargeBinary(length=32), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sender", "nonce"),
    )
    op.create_table(
        "shortfalls",
        sa.Column("tx_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("payment", sa.LargeBinary(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tx_id"),
    )
    op.create_table(
        "vault_grants",
        sa.Column("owner", sa.LargeBinary(), nullable=False),
        sa.Column("element", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("owner"),
    )


def downgrade() -> None:
    op.drop_table("vault_grants")
    op.drop_table("shortfalls")
    op.drop_table("seen_requests")
    op.drop_table("reserve_moves")
    op.drop_table("pool_repays")
    op.drop_index("ix_pool_loans_device_id", table_name="pool_loans")
    op.drop_table("pool_loans")
    op.drop_table("policies")
    op.drop_index("ix_losses_device_id", table_name="losses")
    op.drop_table("losses")
    op.drop_index("ix_journal_account_id", table_name="journal")
    op.drop_table("journal")
    op.drop_index("ix_instructions_device_id", table_name="instructions")
    op.drop_table("instructions")
    op.drop_table("devices")
    op.drop_table("debits")
    op.drop_table("customers")
    op.drop_table("credits")
    op.drop_table("central_moves")
    op.drop_index("ix_awaited_device_id", table_name="awaited")
    op.drop_table("awaited")
    op.drop_table("anomalies")
    op.drop_index("ix_accounts_customer_id", table_name="accounts")
    op.drop_table("accounts")
