"""The audit's subject index becomes a hash index on PostgreSQL.

`lethe audit --subject S` only ever asks `subject_ref = :ref`, and subject refs
are keyed hashes, random by design: a B-tree took each new audit row's key at a
random leaf, which was half the cost of writing the audit in a sweep
(bench/sweep.py); a hash index answers the same lookups at a fraction of that.
SQLite keeps its B-tree (it has no other kind).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_erasures_subject_ref", "erasures")
    op.create_index("ix_erasures_subject_ref", "erasures", ["subject_ref"], postgresql_using="hash")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_erasures_subject_ref", "erasures")
    op.create_index("ix_erasures_subject_ref", "erasures", ["subject_ref"])
