"""The run whose erasure of a lifecycle last failed: no part of that run claims it again.

A failed erasure sets the lifecycle back to due for the next run. The run's other
parts (LETHE_SWEEP_PARTS), and the run itself when its task is retried after the
shop went down, would otherwise claim it again and fail again, or erase it after the
run had audited it failed (worker/sweeps/claims.py, claim_statement).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("lifecycles", sa.Column("failed_run_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lifecycles") as batch:
        batch.drop_column("failed_run_id")
