"""A run's plan: what it would erase, and why it may have to wait for a DPO's approval.

The plan reads the store (due lifecycles per activity and per shop table, held ones,
recent runs) and the shop (table sizes; in a dry run, the rows each target would
touch); the rules it applies to what it read are pure, in worker/domain/sweep_rules.py. It
counts what is due by the claim's own conditions and order (worker/sweeps/claims.py) and
plans rows as the erasure does, so a plan and the sweep that follows it agree. The
run (worker/sweeps/run.py) stores the plan, and stops on its reasons.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from itertools import groupby

import sqlalchemy as sa
from sqlalchemy import exists, func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from worker.domain.register import Register
from worker.domain.sweep_rules import (
    ApprovalLimits,
    DueLifecycle,
    approval_reasons,
    register_digest,
    table_kinds,
)
from worker.settings import Settings
from worker.shop.apply import RemovedRows, count_rows, table_sizes
from worker.shop.binding import BoundTarget, ShopUnavailable, shop_engine, unreachable
from worker.store.schema import Backfill, PurgeRun, StoredLifecycle
from worker.store.sessions import reading
from worker.sweeps import claims
from worker.sweeps.claims import subject_targets, targets_of
from worker.sweeps.runs import REAPPLY_SCHEDULE, SweepResult


def limits_of(settings: Settings) -> ApprovalLimits:
    return ApprovalLimits(
        factor=settings.sweep.max_factor,
        share=settings.sweep.max_share,
        floor=settings.sweep.alarm_floor,
        history=settings.sweep.history,
        min_history=settings.sweep.min_history,
    )


def plan_sweep(
    settings: Settings,
    register: Register,
    bound: dict[str, list[BoundTarget]],
    run: PurgeRun,
    count: bool,
) -> SweepResult:
    """What the run would erase, and why it may need approval; `count` adds shop row counts."""
    now = run.now_at
    with reading(settings.database_url) as session:
        per_activity, per_table = _due_counts(session, now, register)
        held = session.scalar(
            select(func.count())
            .select_from(StoredLifecycle)
            .where(
                StoredLifecycle.deadline_at.is_not(None),
                StoredLifecycle.deadline_at <= now,
                (StoredLifecycle.state == "held")
                | ((StoredLifecycle.state == "active") & claims.manually_held()),
            )
        )
        recent = list(
            session.scalars(
                select(PurgeRun.due)
                # a re-erasure after a restore (worker/sweeps/reapply.py) is no night's size
                .where(
                    PurgeRun.status == "done",
                    PurgeRun.id != run.id,
                    PurgeRun.schedule != REAPPLY_SCHEDULE,
                )
                .order_by(PurgeRun.id.desc())
                .limit(limits_of(settings).history)
            )
        )
        approved_before = session.scalar(
            select(
                exists().where(
                    PurgeRun.register_digest == register_digest(register),
                    PurgeRun.approved_at.is_not(None),
                    PurgeRun.id != run.id,
                )
            )
        )
        last_approval = session.scalar(
            select(func.max(PurgeRun.approved_at)).where(PurgeRun.id != run.id)
        )
        backfilled = select(Backfill.id)
        if last_approval is not None:
            backfilled = backfilled.where(Backfill.started_at > last_approval)
        backfill_since_approval = session.scalar(select(exists(backfilled)))
    tables = {b.table.name: b.table for targets in bound.values() for b in targets}
    engine = shop_engine(settings.shop_database_url)
    try:
        with engine.connect() as connection:
            sizes = table_sizes(connection, [tables[t] for t in per_table if t in tables])
            rows = _due_rows(settings, now, bound, connection) if count else Counter()
    except (OperationalError, InterfaceError) as exc:
        raise ShopUnavailable(unreachable(engine, exc)) from None
    due_total = sum(per_activity.values())
    reasons = approval_reasons(
        due=due_total,
        recent_dues=recent,
        first_on_register=bool(due_total) and not approved_before,
        table_subjects=per_table,
        table_sizes=sizes,
        limits=limits_of(settings),
        backfill_since_approval=bool(backfill_since_approval),
    )
    plan = {
        "now": now.isoformat(),
        "activities": dict(sorted(per_activity.items())),
        "tables": {
            t: {"subjects": n, "size": sizes.get(t, 0)} for t, n in sorted(per_table.items())
        },
        "held": held or 0,
        "reasons": reasons,
    }
    if count:
        plan["rows"] = [
            {"activity": a, "target": t, "rows": n, "kept_by_law": _keeps(bound, a, t)}
            for (a, t), n in sorted(rows.items())
        ]
    return SweepResult(
        run_id=run.id,
        status="dry_run" if count else "running",
        due=due_total,
        held=held or 0,
        reasons=reasons,
        plan=plan,
    )


def _due_rows(
    settings: Settings, now: datetime, bound: dict[str, list[BoundTarget]], shop: sa.Connection
) -> Counter[tuple[str, str]]:
    """Shop rows each (activity, target) would touch: the due lifecycles read in the order
    and the batches the sweep claims them in, each batch planned as the sweep plans it
    (a row an earlier batch would delete is not counted again by a later one). Batch by
    batch, too: a new register's first sweep may find millions due, too many to hold."""
    totals: Counter[tuple[str, str]] = Counter()
    removed = RemovedRows.for_targets(b for targets in bound.values() for b in targets)
    with reading(settings.database_url) as session:
        due = session.execute(
            claims.due_in_claim_order(now).execution_options(yield_per=settings.sweep.batch)
        )
        for page in due.partitions():
            batch = [DueLifecycle(*row) for row in page]
            totals.update(count_rows(shop, subject_targets(targets_of(batch, bound)), removed))
    return totals


def _due_counts(
    session: Session, now: datetime, register: Register
) -> tuple[Counter[str], dict[str, int]]:
    """Due lifecycles per activity, and distinct due subjects per shop table, counted in the
    store: a first sweep on a new register may find millions due, too many to read."""
    lc = StoredLifecycle
    per_activity: Counter[str] = Counter(
        dict(
            session.execute(
                select(lc.activity, func.count()).where(*claims.due(now)).group_by(lc.activity)
            ).all()
        )
    )
    all_kinds = set(register.subject_kinds)
    kinds: dict[tuple[str, str], set[str]] = defaultdict(set)
    for table, activity, kind in table_kinds(register):
        kinds[(table, activity)].add(kind)
    # (table, activity, kind) rows; kind None when the target holds every kind
    rows = [
        (table, activity, kind)
        for (table, activity), found in sorted(kinds.items())
        for kind in ([None] if found == all_kinds else sorted(found))
    ]
    per_table: dict[str, int] = {}
    for chunk in _by_table(rows, 400):
        per_table.update(_distinct_subjects(session, now, chunk))
    return per_activity, per_table


def _by_table(
    rows: list[tuple[str, str, str | None]], most: int
) -> Iterator[list[tuple[str, str, str | None]]]:
    """Rows in groups of at most `most`, a table's rows never split (SQLite takes at most
    500 SELECTs in one UNION)."""
    chunk: list[tuple[str, str, str | None]] = []
    for _, group in groupby(rows, key=lambda row: row[0]):
        group = list(group)
        if chunk and len(chunk) + len(group) > most:
            yield chunk
            chunk = []
        chunk.extend(group)
    if chunk:
        yield chunk


def _distinct_subjects(
    session: Session, now: datetime, rows: list[tuple[str, str, str | None]]
) -> dict[str, int]:
    lc = StoredLifecycle
    # a UNION ALL of literal rows, not VALUES: SQLite names no columns of a VALUES list
    mapping = sa.union_all(
        *(
            select(
                sa.literal(table).label("tbl"),
                sa.literal(activity).label("activity"),
                sa.literal(kind, sa.String).label("kind"),
            )
            for table, activity, kind in rows
        )
    ).subquery("mapping")
    same_kind = sa.or_(
        mapping.c.kind.is_(None),
        func.substr(lc.subject, 1, func.length(mapping.c.kind) + 1) == mapping.c.kind + ":",
    )
    query = (
        select(mapping.c.tbl, func.count(lc.subject.distinct()))
        .select_from(lc)
        .join(mapping, sa.and_(lc.activity == mapping.c.activity, same_kind))
        .where(*claims.due(now))
        .group_by(mapping.c.tbl)
    )
    return dict(session.execute(query).all())


def _keeps(bound: dict[str, list[BoundTarget]], activity: str, target: str) -> str:
    for b in bound.get(activity, []):
        if b.name == target:
            return ",".join(b.target.keeps)
    return ""
