"""Event log, lifecycles, dead letters and redelivery counts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from worker.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_events_subject", "events", ["subject"])
    op.create_table(
        "lifecycles",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("activity", sa.String(100), nullable=False),
        sa.Column("anchor_at", UTCDateTime(), nullable=True),
        sa.Column("deadline_at", UTCDateTime(), nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("then", sa.String(20), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("subject", "activity", name="uq_lifecycles_subject_activity"),
    )
    op.create_index("ix_lifecycles_state_deadline", "lifecycles", ["state", "deadline_at"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("task_id", sa.String(200), primary_key=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("dead_letters")
    op.drop_index("ix_lifecycles_state_deadline", "lifecycles")
    op.drop_table("lifecycles")
    op.drop_index("ix_events_subject", "events")
    op.drop_table("events")
