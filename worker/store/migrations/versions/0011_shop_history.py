"""The shop's past and present: backfills run (so the sweep after one waits for a DPO), and
the coverage task's last result per target (read by /metrics and the nightly re-erasure).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from worker.store.schema import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("sources", sa.Text(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("events", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("refused", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "shop_coverage",
        sa.Column("activity", sa.String(100), primary_key=True),
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("table_name", sa.String(200), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("covered", sa.Integer(), nullable=False),
        sa.Column("uncovered", sa.Integer(), nullable=False),
        sa.Column("back", sa.Integer(), nullable=False),
        sa.Column("examples", sa.Text(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shop_coverage")
    op.drop_table("backfills")
