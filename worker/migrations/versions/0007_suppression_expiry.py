"""The suppression list expires: each address keeps the time its retention counts from.

`kept_from` is the later of its latest opposition and subscription; each sweep
drops the addresses whose `kept_from` is older than LETHE_SUPPRESSION_DAYS
(worker/suppression.py), found by an index on it.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from worker.store import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("suppression", sa.Column("kept_from", UTCDateTime(), nullable=True))
    op.execute(
        "UPDATE suppression SET kept_from = CASE WHEN opposed_at IS NULL OR "
        "subscribed_at > opposed_at THEN subscribed_at ELSE opposed_at END"
    )
    # batch: SQLite cannot make a column NOT NULL in place (the table is copied)
    with op.batch_alter_table("suppression") as batch:
        batch.alter_column("kept_from", existing_type=UTCDateTime(), nullable=False)
        batch.create_index("ix_suppression_kept_from", ["kept_from"])


def downgrade() -> None:
    with op.batch_alter_table("suppression") as batch:
        batch.drop_index("ix_suppression_kept_from")
        batch.drop_column("kept_from")
