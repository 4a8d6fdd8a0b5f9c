"""instruction evidence for the auditor

Revision ID: intermediary_0008
Revises: intermediary_0007
Create Date: 2026-12-05 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "intermediary_0008"
down_revision: str | None = "intermediary_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Issue 18: the auditor checks that no balance instruction gave a card more than its
    # shadow wallet held when it was signed (the journal's last row then), and verifies the
    # card's signed confirmation of each instruction it applied. Older rows have neither.
    op.add_column("instructions", sa.Column("journal_through", sa.BigInteger(), nullable=True))
    op.add_column("instructions", sa.Column("confirmation", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instructions") as batch:
        batch.drop_column("confirmation")
        batch.drop_column("journal_through")
