"""The event summary: per subject, event type and variant, the latest event.

Ingestion computes lifecycles from it instead of reading a subject's whole event log
(worker/domain/summary.py), so an event costs the same whatever its subject's history.
The variants depend on the register, which a migration does not know: every subject
with events gets one stale marker row (spec ''), and its summary is rebuilt from the
log the first time one of its events arrives, or for all subjects by `lethe recompute`.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_summary",
        sa.Column("subject", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(100), primary_key=True),
        sa.Column("variant", sa.String(32), primary_key=True),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spec", sa.String(16), nullable=False),
    )
    # One marker per subject (type '' matches no event type): "has a log, summary stale".
    op.execute(
        "INSERT INTO event_summary (subject, type, variant, event_id, occurred_at, spec) "
        "SELECT subject, '', '', MAX(id), MAX(occurred_at), '' FROM events GROUP BY subject"
    )


def downgrade() -> None:
    op.drop_table("event_summary")
