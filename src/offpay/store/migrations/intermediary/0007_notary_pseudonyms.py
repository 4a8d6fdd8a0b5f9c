"""notary pseudonyms, disclosures and http answer times

Revision ID: intermediary_0007
Revises: intermediary_0006
Create Date: 2026-12-05 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intermediary_0007"
down_revision: str | None = "intermediary_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAMED = ("debits", "credits", "pool_loans")


def upgrade() -> None:
    # Issue 19, point 2: what the notary knows each payment, refund and loan by. Rows written
    # before stay null: the notary knows those by their id (offpay.crypto.pseudonyms).
    for table in _NAMED:
        op.add_column(table, sa.Column("pseudonym", sa.LargeBinary(length=16), nullable=True))
        op.create_index(f"ix_{table}_pseudonym", table, ["pseudonym"])
    op.create_table(
        "pseudonym_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.CheckConstraint("id = 1", name="one_pseudonym_key"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "disclosures",
        sa.Column("nonce", sa.LargeBinary(length=32), nullable=False),
        sa.Column("asked_by", sa.String(length=128), nullable=False),
        sa.Column("pseudonym", sa.LargeBinary(length=16), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=False),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disclosed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index("ix_disclosures_pseudonym", "disclosures", ["pseudonym"])
    # Issue 19, point 5: first answers are kept for a retention window; answers kept before
    # this revision count from the upgrade.
    op.add_column(
        "http_answers", sa.Column("created_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute(sa.text("UPDATE http_answers SET created_at = CURRENT_TIMESTAMP"))
    with op.batch_alter_table("http_answers") as batch:
        batch.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index("ix_http_answers_created_at", ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("http_answers") as batch:
        batch.drop_index("ix_http_answers_created_at")
        batch.drop_column("created_at")
    op.drop_index("ix_disclosures_pseudonym", table_name="disclosures")
    op.drop_table("disclosures")
    op.drop_table("pseudonym_key")
    for table in _NAMED:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_pseudonym")
            batch.drop_column("pseudonym")
