"""Sweeps, the erasure audit, legal holds, the suppression list and schedule slots.

The sweep finds due lifecycles on 0001's (state, deadline_at) index; a third
column (id) for its paging was tried and dropped: it cost every state change an
index write and found 1,000 due among a million no faster (bench/sweep.py).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from worker.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "purge_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("schedule", sa.String(100), nullable=False),
        sa.Column("slot_at", UTCDateTime(), nullable=True),
        sa.Column("now_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("due", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("held", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("erased", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rows", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("parts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("parts_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("register_digest", sa.String(64), nullable=True),
        sa.Column("approved_at", UTCDateTime(), nullable=True),
        sa.Column("plan", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        # Two beats (or a clock jump) ticking for the same slot: the second insert fails.
        sa.UniqueConstraint("schedule", "slot_at", name="uq_purge_runs_schedule_slot"),
    )
    op.create_index("ix_purge_runs_started_at", "purge_runs", ["started_at"])
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("purge_runs.id"), nullable=False),
        sa.Column("subject_ref", sa.String(64), nullable=False),
        sa.Column("activity", sa.String(100), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("columns", sa.Text(), nullable=False),
        sa.Column("strategy", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("erased_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_erasures_subject_ref", "erasures", ["subject_ref"])
    op.create_index("ix_erasures_run_id", "erasures", ["run_id"])
    op.create_table(
        "holds",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_at", UTCDateTime(), nullable=False),
        sa.Column("lifted_at", UTCDateTime(), nullable=True),
        sa.Column("lift_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_holds_subject", "holds", ["subject"])
    op.create_table(
        "suppression",
        sa.Column("value_hash", sa.String(100), primary_key=True),
        sa.Column("activity", sa.String(100), nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "schedule_slots",
        sa.Column("schedule", sa.String(100), primary_key=True),
        sa.Column("slot_at", UTCDateTime(), primary_key=True),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedule_slots")
    op.drop_table("suppression")
    op.drop_index("ix_holds_subject", "holds")
    op.drop_table("holds")
    op.drop_index("ix_erasures_run_id", "erasures")
    op.drop_index("ix_erasures_subject_ref", "erasures")
    op.drop_table("erasures")
    op.drop_index("ix_purge_runs_started_at", "purge_runs")
    op.drop_table("purge_runs")
