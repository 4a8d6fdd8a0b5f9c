"""notary pseudonyms and http answer times

Revision ID: central_0005
Revises: central_0004
Create Date: 2026-12-05 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "central_0005"
down_revision: str | None = "central_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 19, point 2: the notary records payments under a pseudonym and a commitment to the
    # evidence (offpay.crypto.pseudonyms). Rows recorded before keep their values: the payment
    # id in ``pseudonym`` and the evidence digest in ``commitment``, which is what an
    # intermediary sends for a payment it debited before its own upgrade (a retry of one is
    # answered ``already``, never recorded twice). docs/notary-privacy.md says more.
    with op.batch_alter_table("notary") as batch:
        batch.alter_column("tx_id", new_column_name="pseudonym")
        batch.alter_column("evidence", new_column_name="commitment")
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
    with op.batch_alter_table("notary") as batch:
        batch.alter_column("commitment", new_column_name="evidence")
        batch.alter_column("pseudonym", new_column_name="tx_id")
