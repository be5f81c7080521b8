"""The suppression list learns when: the latest opposition and subscription per address.

A subscription dated after the latest opposition lifts the suppression
(worker/store/suppression.py). Rows written before this had only `added_at`, when
Lethe stored them, a little after the opposition: it stands in for it.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from worker.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("suppression", sa.Column("opposed_at", UTCDateTime(), nullable=True))
    op.add_column("suppression", sa.Column("subscribed_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE suppression SET opposed_at = added_at")


def downgrade() -> None:
    # the old list knew no lifts: a lifted address would read as suppressed again
    op.execute("DELETE FROM suppression WHERE opposed_at IS NULL OR subscribed_at > opposed_at")
    with op.batch_alter_table("suppression") as batch:
        batch.drop_column("subscribed_at")
        batch.drop_column("opposed_at")
