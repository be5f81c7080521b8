"""Erased lifecycles by erasure time: what each sweep looks at to forget a person.

Lethe's own records of a person whose every lifecycle is erased (events,
lifecycle dates) are deleted LETHE_FORGET_AFTER_DAYS after the latest erasure
(worker/sweeps/forgetting.py). The sweep pages through erased lifecycles older than
that on this index, by (erased_at, id), instead of reading every lifecycle each
night.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_lifecycles_state_erased_at", "lifecycles", ["state", "erased_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_lifecycles_state_erased_at", "lifecycles")
