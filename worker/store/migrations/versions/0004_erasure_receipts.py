"""Erasure receipts: what a batch deleted, kept until its audit rows are committed.

On SQLite the receipts live in a file of their own beside the store (the store's
single write lock is held by the batch that writes them), so this table is made
on PostgreSQL only.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_table(
        "erasure_receipts",
        sa.Column("lifecycle_id", sa.Integer(), primary_key=True),
        sa.Column("target", sa.String(200), primary_key=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("suppressed", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_table("erasure_receipts")
