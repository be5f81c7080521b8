"""Claiming: which lifecycles are due, the order sweeps take them in, and a batch claimed.

A claim locks its batch and marks it erased, as of the run's clock, in the store
transaction the batch's erasure runs in (worker/sweeps/erasure.py). The plan
(worker/sweeps/plan.py) counts what is due by the same conditions and in the same
order, so a plan and the sweep that follows it agree.

SQLite: SQLAlchemy renders no FOR UPDATE there. Its guard is the database's
single writer: every store transaction that writes begins IMMEDIATE (worker/store/schema.py),
and a claim's read and marking happen in one transaction under that lock, so a
second sweep only ever sees the first one's batches committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from worker.domain.sweep_rules import DueLifecycle
from worker.shop.binding import BoundTarget
from worker.store.schema import Hold, StoredLifecycle, UTCDateTime
from worker.store.sessions import ONE_OF_CHUNK, chunks, keyset_after, now_utc, one_of


def manually_held() -> Any:
    return exists().where(Hold.subject == StoredLifecycle.subject, Hold.lifted_at.is_(None))


def due(now: datetime) -> tuple[Any, ...]:
    return (
        StoredLifecycle.state == "active",
        StoredLifecycle.deadline_at.is_not(None),
        StoredLifecycle.deadline_at <= now,
        ~manually_held(),
    )


def due_in_claim_order(now: datetime) -> sa.Select:
    """Due, unheld lifecycles in the order sweeps claim them: oldest deadline first."""
    return (
        select(
            StoredLifecycle.id,
            StoredLifecycle.subject,
            StoredLifecycle.activity,
            StoredLifecycle.anchor_at,
            StoredLifecycle.deadline_at,
            StoredLifecycle.erased_at,
        )
        .where(*due(now))
        .order_by(StoredLifecycle.deadline_at, StoredLifecycle.id)
    )


def claim_statement(
    run_id: int, now: datetime, after: tuple[datetime, int] | None, limit: int
) -> sa.Select:
    """Due, unheld lifecycles that this run has not failed to erase, oldest deadline
    first, locked for this transaction."""
    query = (
        due_in_claim_order(now)
        # Another part of the run (or the run itself, retried after the shop went down)
        # would fail it again, or erase it after the run audited it failed.
        .where(StoredLifecycle.failed_run_id.is_distinct_from(run_id))
        .limit(limit)
        # Several parts share a run: each skips what another has claimed.
        .with_for_update(skip_locked=True, of=StoredLifecycle)
    )
    if after is not None:
        # Keyset paging: the index starts at the cursor instead of walking again past
        # the lifecycles this part failed.
        query = query.where(*keyset_after(StoredLifecycle.deadline_at, StoredLifecycle.id, after))
    return query


def claim_batch(
    session: Session, run_id: int, now: datetime, after: tuple[datetime, int] | None, limit: int
) -> list[DueLifecycle]:
    """Claim a batch: lock it (FOR UPDATE SKIP LOCKED on PostgreSQL) and mark it erased, as
    of the run's clock, in one write per lifecycle. The mark is this transaction's until
    commit (a crash rolls it back). Lifecycles whose erasure fails are set back to active,
    with their earlier erasure time, before commit, marked with the run that failed them."""
    lc = StoredLifecycle.__table__.c
    marked_at = now_utc()
    mark = {"state": "erased", "erased_at": now, "updated_at": marked_at}
    if session.get_bind().dialect.name == "postgresql":
        # Found, locked and marked in one statement: one round trip, and no list of ids
        # sent back. RETURNING keeps no order, so the batch is put back in claim order.
        found = claim_statement(run_id, now, after, limit).cte("due")
        statement = (
            update(StoredLifecycle.__table__)
            .where(
                lc.id == found.c.id,
                # the same condition as an array of ids: the rows are found on the primary
                # key, where the join alone let PostgreSQL hash the whole table per batch
                lc.id == sa.any_(sa.func.array(select(found.c.id).scalar_subquery())),
            )
            .values(mark)
            # `erased_at` as it was before this mark; the times as psycopg reads them (aware,
            # in the session's UTC): 270,000 conversions to no effect in a sweep of 90,000
            .returning(*(_as_read(c) for c in found.c))
        )
        claimed = [DueLifecycle(*row) for row in session.connection().execute(statement).all()]
        claimed.sort(key=lambda c: (c.deadline_at, c.id))
        return claimed
    rows = session.execute(claim_statement(run_id, now, after, limit)).all()
    claimed = [DueLifecycle(*row) for row in rows]
    # Locked and read first, then written once: `erased_at` is set here, not after the
    # shop's commit, so each lifecycle gets one new row version instead of two (that
    # second `UPDATE` per batch cost more than the claim: 3.9 s of claim and erased_at
    # together against 2.0 s for lock and one write, 180,000 lifecycles, /tmp script).
    # `erased_at` on the run's clock, as the events' (a demo's is simulated). Core, not
    # the ORM's bulk update: no session objects are involved.
    for chunk in chunks([c.id for c in claimed], ONE_OF_CHUNK):
        session.connection().execute(
            update(StoredLifecycle.__table__)
            .where(one_of(lc.id, chunk, session.get_bind()))
            .values(mark)
        )
    return claimed  # in claim order: the statement's ORDER BY


def _as_read(column: Any) -> Any:
    if isinstance(column.type, UTCDateTime):
        return sa.type_coerce(column, sa.DateTime(timezone=True)).label(column.name)
    return column


def targets_of(
    claimed: Sequence[DueLifecycle], bound: dict[str, list[BoundTarget]]
) -> list[tuple[DueLifecycle, list[BoundTarget]]]:
    """Each lifecycle of a batch with the targets holding its kind's data, in batch order."""
    items = []
    # one list per (activity, kind), shared by the batch's lifecycles: read, never changed
    lists: dict[tuple[str, str], list[BoundTarget]] = {}
    for lc in claimed:
        activity, kind = lc.activity, lc.kind
        targets = lists.get((activity, kind))
        if targets is None:
            targets = lists[(activity, kind)] = [
                b for b in bound.get(activity, []) if b.target.applies_to(kind)
            ]
        items.append((lc, targets))
    return items


def subject_targets(
    items: list[tuple[DueLifecycle, list[BoundTarget]]],
) -> list[tuple[str, BoundTarget]]:
    """The (subject, target) pairs `apply_targets` and `count_rows` take, in batch order."""
    return [(lc.subject, b) for lc, targets in items for b in targets]
