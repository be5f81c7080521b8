"""The suppression list expires: each address keeps the time its retention counts from.

`kept_from` is the latest of its opposition, its subscription and `erased_at`,
when a sweep erased the data that held the address; each sweep drops the
addresses whose `kept_from` is older than LETHE_SUPPRESSION_DAYS (an opposition
only once erased: worker/store/suppression.py), found by an index on it.

Revision ID: 0007
Revises: 0006
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from worker.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("suppression", sa.Column("kept_from", UTCDateTime(), nullable=True))
    op.add_column("suppression", sa.Column("erased_at", UTCDateTime(), nullable=True))
    # Entries from before: the earlier code kept an address's first opposition only, so
    # a later one (after a return it did not record) is unknown, and so is whether a
    # sweep erased the row that holds it. They count from the upgrade, and an opposition
    # among them waits for a sweep to erase data holding the address, as a new one does.
    upgraded = datetime.now(UTC)
    op.get_bind().execute(
        sa.text("UPDATE suppression SET kept_from = :now").bindparams(
            sa.bindparam("now", type_=UTCDateTime())
        ),
        {"now": upgraded},
    )
    # batch: SQLite cannot make a column NOT NULL in place (the table is copied)
    with op.batch_alter_table("suppression") as batch:
        batch.alter_column("kept_from", existing_type=UTCDateTime(), nullable=False)
        batch.create_index("ix_suppression_kept_from", ["kept_from"])


def downgrade() -> None:
    with op.batch_alter_table("suppression") as batch:
        batch.drop_index("ix_suppression_kept_from")
        batch.drop_column("erased_at")
        batch.drop_column("kept_from")
