"""When a sweep last erased a lifecycle's data, on the sweep's own clock.

Only the events after it start a new lifecycle: an erasure request wins over a
visit or a contact made before its erasure, and data the shop gathers after the
erasure gets a deadline of its own.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from worker.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lifecycles") as batch:
        batch.add_column(sa.Column("erased_at", UTCDateTime(), nullable=True))
    # Erased before this column: the deadline stands in for the erasure, which came
    # at or after it. Events after the deadline then start a new lifecycle; the data
    # of those before the erasure is gone already, so the worst is a later
    # "nothing to erase", never data kept late or erased early. Left NULL, an old
    # erasure request would end every later lifecycle at once, or keep none.
    op.execute("UPDATE lifecycles SET erased_at = deadline_at WHERE state = 'erased'")


def downgrade() -> None:
    with op.batch_alter_table("lifecycles") as batch:
        batch.drop_column("erased_at")
