"""Sweeps: claim due lifecycles, erase their data in the shop, audit, mark them erased.

The one sweep beat, `lethe purge` and `lethe demo` run. A run is a row of
`purge_runs`; it plans (and may stop for a DPO's approval), then one or more
parts page through due lifecycles in batches:

    store transaction:  claim a batch: lock it, mark it erased as of the run's clock
                        (the rows chosen FOR UPDATE SKIP LOCKED on PostgreSQL)
      shop transaction: apply the strategies of every claimed lifecycle
                        receipts committed for deleted rows (worker/receipts.py)
                        commit
      audit rows, suppression hashes, failures set back to active (and to their
      earlier erasure time), payloads dropped
    commit; receipts dropped

A lifecycle whose erasure failed is due again for the next run, never for the run
that failed it: its parts skip it, so a run tries each lifecycle once and audits a
failure once.

A killed worker loses at most its open batch: the store rolls back, the claimed
lifecycles are due again, and the strategies are idempotent, so the next sweep
finishes them with one audit row per erasure. If the shop had committed, rows
it deleted cannot be found again: the next sweep takes their count and
suppression hashes from the receipts.

SQLite: SQLAlchemy renders no FOR UPDATE there. Its guard is the database's
single writer: every store transaction that writes begins IMMEDIATE (worker/store.py),
and a claim's read and marking happen in one transaction under that lock, so a
second sweep only ever sees the first one's batches committed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from worker import forgetting, receipts, suppression
from worker.audit import COLUMNS as AUDIT_COLUMNS
from worker.hashing import subject_ref
from worker.ingest import events_of
from worker.logs import log
from worker.payloads import drop_erased_payloads
from worker.register import Register
from worker.settings import Settings
from worker.shop import (
    Applied,
    BoundTarget,
    RemovedRows,
    ShopUnavailable,
    apply_targets,
    bind_targets,
    count_rows,
    shop_engine,
    table_sizes,
)
from worker.shop_constraints import failure_text
from worker.store import (
    ONE_OF_CHUNK,
    DeadLetter,
    Erasure,
    Hold,
    PurgeRun,
    StoredEvent,
    StoredLifecycle,
    chunks,
    keyset_after,
    now_utc,
    one_of,
    transaction,
)
from worker.sweep_plan import (
    ApprovalLimits,
    DueLifecycle,
    LoggedEvent,
    approval_reasons,
    register_digest,
    rule_text,
    table_kinds,
)

Progress = Callable[[int], None]


class SweepRefused(RuntimeError):
    """A request the sweep cannot follow (approving a run that awaits nothing, ...)."""


# A sweep's clock may run this far ahead of the real one (beat's own runs carry their
# slot time, a little behind it at most); further would erase before the deadline.
FUTURE_TOLERANCE = timedelta(minutes=5)


def ahead_of_the_clock(moment: datetime) -> timedelta | None:
    """How far `moment` is ahead of the real clock, when that is too far for a sweep."""
    ahead = moment - now_utc()
    return ahead if ahead > FUTURE_TOLERANCE else None


@dataclass
class SweepResult:
    run_id: int | None
    status: str  # done | awaiting_approval | dry_run | failed | skipped
    due: int = 0
    held: int = 0
    erased: int = 0
    failed: int = 0
    rows: int = 0
    reasons: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


@dataclass
class _BatchOutcome:
    audit: list[dict[str, Any]] = field(default_factory=list)
    erased_ids: list[int] = field(default_factory=list)
    failed_ids: list[int] = field(default_factory=list)
    rows: int = 0
    suppressed: list[tuple[str, str, str]] = field(default_factory=list)


def limits_of(settings: Settings) -> ApprovalLimits:
    return ApprovalLimits(
        factor=settings.sweep.max_factor,
        share=settings.sweep.max_share,
        floor=settings.sweep.alarm_floor,
    )


# -- runs ---------------------------------------------------------------------------------


def open_run(
    settings: Settings,
    register: Register,
    *,
    now: datetime,
    schedule: str = "manual",
    slot_at: datetime | None = None,
    status: str = "running",
) -> int | None:
    """A new run; None when a scheduled run already claimed this slot."""
    moment = now_utc()
    _close_abandoned_runs(settings, moment)
    receipts.prune(receipts.receipts_url(settings.database_url))
    try:
        with transaction(settings.database_url) as session:
            run = PurgeRun(
                schedule=schedule,
                slot_at=slot_at,
                now_at=now,
                started_at=moment,
                heartbeat_at=moment,
                status=status,
                due=0,
                held=0,
                erased=0,
                failed=0,
                rows=0,
                parts=1,
                parts_done=0,
                register_digest=register_digest(register),
            )
            session.add(run)
            session.flush()
            return run.id
    except IntegrityError:
        return None


def _housekeeping(settings: Settings, register: Register, now: datetime) -> None:
    """Lethe's own records past their time: only in a run that goes ahead, as planned
    or approved (a new register must not forget anyone before a DPO approved it)."""
    moment = now_utc()
    _drop_old_dead_letters(settings, moment)
    _drop_expired_suppressions(settings, min(now, moment))
    _forget_erased_subjects(settings, register, min(now, moment))


def _drop_old_dead_letters(settings: Settings, moment: datetime) -> None:
    """Refused events are kept whole for a replay, personal data included: not for ever."""
    kept_since = moment - timedelta(days=settings.sweep.dead_letter_days)
    with transaction(settings.database_url) as session:
        session.execute(delete(DeadLetter).where(DeadLetter.received_at < kept_since))


def _drop_expired_suppressions(settings: Settings, clock: datetime) -> None:
    """The suppression list is personal data too (worker/suppression.py): not for ever.

    Its times are the shop's own event times, so they are compared with the run's
    clock (a demo replaying past years), never one ahead of the real clock."""
    kept_since = clock - timedelta(days=settings.sweep.suppression_days)
    with transaction(settings.database_url) as session:
        suppression.drop_expired(session, kept_since)


def _forget_erased_subjects(settings: Settings, register: Register, clock: datetime) -> None:
    """What Lethe keeps of an erased person is personal data too (worker/forgetting.py).

    Erasure times are on the sweeps' clocks, so they are compared with the run's
    clock (a demo replaying past years), never one ahead of the real clock; lifts are
    on the real clock, which that capped clock never passes, so none goes early."""
    days = settings.sweep.forget_after_days
    period = timedelta(days=days)
    done = forgetting.forget(
        settings.database_url, register, clock - period, now_utc() - period, settings.sweep.batch
    )
    if done.subjects or done.lifted_holds:
        log.info(
            "forgot people erased long ago",
            people=done.subjects,
            events=done.events,
            lifecycles=done.lifecycles,
            lifted_holds=done.lifted_holds,
            after_days=days,
        )


# A run whose heartbeat is this old lost its worker: what it left stays due for the next run.
ABANDONED_AFTER = timedelta(minutes=30)


def _close_abandoned_runs(settings: Settings, moment: datetime) -> None:
    with transaction(settings.database_url) as session:
        session.execute(
            update(PurgeRun)
            .where(
                PurgeRun.status == "running",
                PurgeRun.heartbeat_at < moment - ABANDONED_AFTER,
            )
            .values(
                status="failed",
                finished_at=moment,
                note="interrupted: no heartbeat for 30 minutes (worker lost); what it had not "
                "erased stayed due and is swept by a later run",
            )
        )


def resumable_run(settings: Settings, schedule: str, slot_at: datetime) -> int | None:
    """The run that claimed this slot, if it is still running (its worker was lost)."""
    with transaction(settings.database_url) as session:
        return session.scalar(
            select(PurgeRun.id).where(
                PurgeRun.schedule == schedule,
                PurgeRun.slot_at == slot_at,
                PurgeRun.status == "running",
            )
        )


def run_sweep(
    settings: Settings,
    register: Register,
    run_id: int,
    *,
    progress: Progress | None = None,
    on_plan: Callable[[SweepResult], None] | None = None,
    spawn_parts: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Plan run `run_id`, stop for approval if needed, then erase (as its first part).

    `spawn_parts(run_id, n)` asks n more workers to share the run (the beat task).
    Raises ShopUnavailable or ShopMismatch, leaving every lifecycle as it was.
    """
    run = load_run(settings, run_id)
    engine = shop_engine(settings.shop_database_url)
    bound = bind_targets(register, settings.register_path, engine, settings.secret)
    now = run.now_at
    if run.status == "dry_run":
        result = plan_sweep(settings, register, bound, run, count=True)
        _set_run(settings, run_id, due=result.due, held=result.held, plan=json.dumps(result.plan))
        _finish(settings, run_id, "dry_run", _reasons_note(result.reasons, dry=True))
        return result
    if run.status != "running":
        raise SweepRefused(f"run {run_id} is {run.status}, not running")
    if run.plan is None:
        result = plan_sweep(settings, register, bound, run, count=False)
        if result.reasons and run.approved_at is None:
            _set_run(
                settings, run_id, due=result.due, held=result.held, plan=json.dumps(result.plan)
            )
            note = _reasons_note(result.reasons, run_id=run_id)
            _finish(settings, run_id, "awaiting_approval", note, finished=False)
            result.status, result.note = "awaiting_approval", note
            return result
        parts = max(1, settings.sweep.parts if spawn_parts else 1)
        _set_run(
            settings,
            run_id,
            due=result.due,
            held=result.held,
            plan=json.dumps(result.plan),
            parts=parts,
        )
        if on_plan:
            on_plan(result)
        if spawn_parts and parts > 1:
            spawn_parts(run_id, parts - 1)
    _housekeeping(settings, register, now)
    run_part(settings, register, bound, run_id, now, progress=progress)
    return finish_part(settings, run_id)


def approve(settings: Settings, register: Register, run_id: int) -> None:
    """A DPO's go-ahead for a stopped run: it erases what it planned, as of its own now."""
    with transaction(settings.database_url) as session:
        run = session.get(PurgeRun, run_id, with_for_update=True)
        if run is None:
            raise SweepRefused(
                f"there is no run {run_id}: the run to approve is the one `lethe purge` or "
                "`lethe status` named when it stopped (the dashboard lists recent sweeps)"
            )
        if run.status != "awaiting_approval":
            raise SweepRefused(
                f"run {run_id} is {run.status}: only a run awaiting approval can be approved"
            )
        if run.register_digest != register_digest(register):
            raise SweepRefused(
                f"the register changed since run {run_id} was planned: run `lethe purge` "
                "again and approve the new run"
            )
        run.status = "running"
        run.approved_at = now_utc()
        run.heartbeat_at = now_utc()
        run.plan = None
        # the note said what to approve; once approved it would mislead the dashboard
        if run.note:
            why = run.note.removeprefix("waiting for approval: ").split(". Check with")[0]
            run.note = f"approved by a DPO after it stopped: {why}"


def plan_sweep(
    settings: Settings,
    register: Register,
    bound: dict[str, list[BoundTarget]],
    run: PurgeRun,
    count: bool,
) -> SweepResult:
    """What the run would erase, and why it may need approval; `count` adds shop row counts."""
    now = run.now_at
    with transaction(settings.database_url) as session:
        per_activity, per_table = _due_counts(session, now, register)
        held = session.scalar(
            select(func.count())
            .select_from(StoredLifecycle)
            .where(
                StoredLifecycle.deadline_at.is_not(None),
                StoredLifecycle.deadline_at <= now,
                (StoredLifecycle.state == "held")
                | ((StoredLifecycle.state == "active") & _manually_held()),
            )
        )
        recent = list(
            session.scalars(
                select(PurgeRun.due)
                .where(PurgeRun.status == "done", PurgeRun.id != run.id)
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
    tables = {b.table.name: b.table for targets in bound.values() for b in targets}
    engine = shop_engine(settings.shop_database_url)
    try:
        with engine.connect() as connection:
            sizes = table_sizes(connection, [tables[t] for t in per_table if t in tables])
            rows = _due_rows(settings, now, bound, connection) if count else Counter()
    except (OperationalError, InterfaceError) as exc:
        raise ShopUnavailable(_shop_down(exc)) from None
    due_total = sum(per_activity.values())
    reasons = approval_reasons(
        due=due_total,
        recent_dues=recent,
        first_on_register=bool(due_total) and not approved_before,
        table_subjects=per_table,
        table_sizes=sizes,
        limits=limits_of(settings),
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
    with transaction(settings.database_url) as session:
        due = session.execute(
            due_in_claim_order(now).execution_options(yield_per=settings.sweep.batch)
        )
        for page in due.partitions():
            batch = [DueLifecycle(*row) for row in page]
            totals.update(count_rows(shop, _work(_targets_of(batch, bound)), removed))
    return totals


def _targets_of(
    claimed: Sequence[DueLifecycle], bound: dict[str, list[BoundTarget]]
) -> list[tuple[DueLifecycle, list[BoundTarget]]]:
    """Each lifecycle of a batch with the targets holding its kind's data, in batch order."""
    return [
        (lc, [b for b in bound.get(lc.activity, []) if b.target.applies_to(lc.kind)])
        for lc in claimed
    ]


def _work(items: list[tuple[DueLifecycle, list[BoundTarget]]]) -> list[tuple[str, BoundTarget]]:
    """The (subject, target) pairs `apply_targets` and `count_rows` take, in batch order."""
    return [(lc.subject, b) for lc, targets in items for b in targets]


def _due_counts(
    session: Session, now: datetime, register: Register
) -> tuple[Counter[str], dict[str, int]]:
    """Due lifecycles per activity, and distinct due subjects per shop table, counted in the
    store: a first sweep on a new register may find millions due, too many to read."""
    lc = StoredLifecycle
    per_activity: Counter[str] = Counter(
        dict(
            session.execute(
                select(lc.activity, func.count()).where(*_due(now)).group_by(lc.activity)
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
        .where(*_due(now))
        .group_by(mapping.c.tbl)
    )
    return dict(session.execute(query).all())


def _keeps(bound: dict[str, list[BoundTarget]], activity: str, target: str) -> str:
    for b in bound.get(activity, []):
        if b.name == target:
            return ",".join(b.target.keeps)
    return ""


def finish_part(settings: Settings, run_id: int) -> SweepResult:
    """One part is done; the last one closes the run."""
    with transaction(settings.database_url) as session:
        run = session.get(PurgeRun, run_id, with_for_update=True)
        run.parts_done += 1
        if run.parts_done >= run.parts and run.status == "running":
            run.status = "done"
            run.finished_at = now_utc()
        return SweepResult(
            run_id=run.id,
            status=run.status,
            due=run.due,
            held=run.held,
            erased=run.erased,
            failed=run.failed,
            rows=run.rows,
            plan=json.loads(run.plan) if run.plan else {},
            note=run.note,
        )


def fail_run(settings: Settings, run_id: int, note: str) -> None:
    """Mark a run failed; a dry run that failed stays a dry run (it changes nothing, so
    status and the dashboard must not report a failed sweep)."""
    dry = load_run(settings, run_id).status == "dry_run"
    _finish(settings, run_id, "dry_run" if dry else "failed", note)


def note_run(settings: Settings, run_id: int, note: str) -> None:
    _set_run(settings, run_id, note=note)


def load_run(settings: Settings, run_id: int) -> PurgeRun:
    with transaction(settings.database_url) as session:
        run = session.get(PurgeRun, run_id)
        if run is None:
            raise SweepRefused(f"there is no run {run_id}")
        session.expunge(run)
        return run


def _set_run(settings: Settings, run_id: int, **values: Any) -> None:
    with transaction(settings.database_url) as session:
        session.execute(update(PurgeRun).where(PurgeRun.id == run_id).values(**values))


def _finish(
    settings: Settings, run_id: int, status: str, note: str | None, finished: bool = True
) -> None:
    values: dict[str, Any] = {"status": status, "note": note}
    if finished:
        values["finished_at"] = now_utc()
    _set_run(settings, run_id, **values)


def _reasons_note(
    reasons: Sequence[str], run_id: int | None = None, dry: bool = False
) -> str | None:
    if not reasons:
        return None
    why = "; ".join(reasons)
    if dry:
        return f"a real sweep would wait for approval: {why}"
    return (
        f"waiting for approval: {why}. Check with `lethe purge --dry-run`, then run "
        f"`lethe purge --approve {run_id}`"
    )


def _shop_down(exc: Exception) -> str:
    return (
        f"the shop database became unreachable ({type(exc).__name__}); this batch was rolled "
        "back, due lifecycles stay due and the next sweep tries again"
    )


# -- claiming and erasing ------------------------------------------------------------------


def _manually_held() -> Any:
    return exists().where(Hold.subject == StoredLifecycle.subject, Hold.lifted_at.is_(None))


def _due(now: datetime) -> tuple[Any, ...]:
    return (
        StoredLifecycle.state == "active",
        StoredLifecycle.deadline_at.is_not(None),
        StoredLifecycle.deadline_at <= now,
        ~_manually_held(),
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
        .where(*_due(now))
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


def run_part(
    settings: Settings,
    register: Register,
    bound: dict[str, list[BoundTarget]],
    run_id: int,
    now: datetime,
    progress: Progress | None = None,
) -> None:
    """Erase due lifecycles batch by batch until none is left to claim."""
    # Whoever reaches the broker can name any run: only one that is running (planned
    # within its limits, or approved by a DPO) erases anything.
    run = load_run(settings, run_id)
    if run.status != "running":
        raise SweepRefused(f"run {run_id} is {run.status}, not running: it erases nothing")
    if ahead_of_the_clock(run.now_at):
        raise SweepRefused(f"run {run_id} is set ahead of the real clock: it erases nothing")
    engine = shop_engine(settings.shop_database_url)
    receipts_at = receipts.receipts_url(settings.database_url)
    receipts_in_store = receipts.in_store(settings.database_url)
    after: tuple[datetime, int] | None = None
    while True:
        with transaction(settings.database_url) as session:
            claimed = claim_batch(session, run_id, now, after, settings.sweep.batch)
            if not claimed:
                break
            after = (claimed[-1].deadline_at, claimed[-1].id)
            events = _events_of(session, sorted({lc.subject for lc in claimed}))
            keeper = _ReceiptKeeper.for_batch(receipts_at, run_id, claimed, bound)
            outcome = _erase(engine, claimed, bound, register, events, settings.secret, keeper)
            _record(session, run_id, register, claimed, outcome, events, now)
            if receipts_in_store:
                # dropped with the commit of the audit rows they stood for
                receipts.forget(session.connection(), keeper.touched)
            _heartbeat(session, run_id)
        if not receipts_in_store:
            receipts.forget(receipts_at, keeper.touched)  # the audit rows are committed
        if progress:
            progress(len(claimed))


def _needs_receipt(bound: BoundTarget) -> bool:
    """Deleted rows cannot be counted twice, nor anonymised addresses hashed again."""
    return bound.target.delete_rows or bool(bound.target.suppress)


@dataclass
class _ReceiptKeeper:
    """A batch's receipts (worker/receipts.py): an earlier try's, read at claim time, and
    this try's, committed before each shop commit."""

    url: str
    run_id: int
    earlier: dict[tuple[int, str], receipts.Receipt]
    touched: set[int] = field(default_factory=set)

    @classmethod
    def for_batch(
        cls,
        url: str,
        run_id: int,
        claimed: list[DueLifecycle],
        bound: dict[str, list[BoundTarget]],
    ) -> _ReceiptKeeper:
        ids = [
            lc.id for lc in claimed if any(_needs_receipt(b) for b in bound.get(lc.activity, []))
        ]
        earlier = receipts.load(url, ids) if ids else {}
        return cls(url, run_id, earlier, {i for i, _ in earlier})

    def keep(self, items: list[tuple[DueLifecycle, list[BoundTarget]]], applied: Applied) -> None:
        """Add what an earlier try already deleted to `applied`, then commit this try's
        receipts; called inside the shop transaction, before it commits."""
        suppressed: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for subject, value_hash, activity in applied.suppressed:
            suppressed[(subject, activity)].append((value_hash, activity))
        written: list[tuple[int, str, receipts.Receipt]] = []
        for lc, targets in items:
            for b in targets:
                if not _needs_receipt(b):
                    continue
                key = (lc.subject, lc.activity, b.name)
                mine = suppressed[(lc.subject, lc.activity)]
                # An earlier try's receipt stands whatever the deadline is now: new events
                # since (a second unsubscription) do not undo what it deleted.
                before = self.earlier.get((lc.id, b.name))
                if before is not None:
                    applied.rows[key] = max(applied.rows[key], before.rows)
                    for pair in before.suppressed:
                        if pair not in mine:
                            mine.append(pair)
                            applied.suppressed.append((lc.subject, *pair))
                if applied.rows[key] or mine:
                    written.append(
                        (
                            lc.id,
                            b.name,
                            receipts.Receipt(lc.deadline_at, applied.rows[key], list(mine)),
                        )
                    )
        receipts.write(self.url, self.run_id, written)
        self.touched.update(lifecycle_id for lifecycle_id, _, _ in written)


def claim_batch(
    session: Session, run_id: int, now: datetime, after: tuple[datetime, int] | None, limit: int
) -> list[DueLifecycle]:
    """Claim a batch: lock it (FOR UPDATE SKIP LOCKED on PostgreSQL) and mark it erased, as
    of the run's clock, in one write per lifecycle. The mark is this transaction's until
    commit (a crash rolls it back). Lifecycles whose erasure fails are set back to active,
    with their earlier erasure time, before commit, marked with the run that failed them."""
    rows = session.execute(claim_statement(run_id, now, after, limit)).all()
    claimed = [DueLifecycle(*row) for row in rows]
    lc = StoredLifecycle.__table__.c
    # Locked and read first, then written once: `erased_at` is set here, not after the
    # shop's commit, so each lifecycle gets one new row version instead of two (that
    # second `UPDATE` per batch cost more than the claim: 3.9 s of claim and erased_at
    # together against 2.0 s for lock and one write, 180,000 lifecycles, /tmp script).
    # `erased_at` on the run's clock, as the events' (a demo's is simulated). Core, not
    # the ORM's bulk update: no session objects are involved.
    marked_at = now_utc()
    for chunk in chunks([c.id for c in claimed], ONE_OF_CHUNK):
        session.connection().execute(
            update(StoredLifecycle.__table__)
            .where(one_of(lc.id, chunk, session.get_bind()))
            .values(state="erased", erased_at=now, updated_at=marked_at)
        )
    return claimed  # in claim order: the statement's ORDER BY


def _heartbeat(session: Session, run_id: int) -> None:
    session.execute(update(PurgeRun).where(PurgeRun.id == run_id).values(heartbeat_at=now_utc()))


def _events_of(session: Session, subjects: list[str]) -> dict[str, list[tuple[str, LoggedEvent]]]:
    found: dict[str, list[tuple[str, LoggedEvent]]] = defaultdict(list)
    for chunk in chunks(subjects, ONE_OF_CHUNK):
        query = select(
            StoredEvent.id, StoredEvent.subject, StoredEvent.type, StoredEvent.occurred_at
        ).where(one_of(StoredEvent.subject, chunk, session.get_bind()))
        for row in session.execute(query):
            found[row.subject].append((row.id, LoggedEvent(row.type, row.occurred_at)))
    return found


def _erase(
    engine: sa.Engine,
    claimed: list[DueLifecycle],
    bound: dict[str, list[BoundTarget]],
    register: Register,
    events: dict[str, list[tuple[str, LoggedEvent]]],
    secret: bytes,
    keeper: _ReceiptKeeper,
) -> _BatchOutcome:
    items = _targets_of(claimed, bound)
    pairs = _work(items)
    outcome = _BatchOutcome()
    try:
        # The whole batch in one shop transaction: each lifecycle is erased whole or
        # not at all, at the cost of one transaction per batch instead of per subject.
        with engine.begin() as connection:
            applied = apply_targets(connection, pairs, secret)
            keeper.keep(items, applied)
        results: dict[int, Applied | str] = {lc.id: applied for lc, _ in items}
    except (OperationalError, InterfaceError) as exc:
        raise ShopUnavailable(_shop_down(exc)) from None
    except Exception:
        # One subject's row broke a constraint, or a value no strategy could read (or a
        # bug met on one row): retry subject by subject so the others still go, and only
        # that one is audited as failed instead of every sweep dying on it.
        results = {}
        for lc, targets in items:
            try:
                with engine.begin() as connection:
                    alone = apply_targets(connection, [(lc.subject, b) for b in targets], secret)
                    keeper.keep([(lc, targets)], alone)
                results[lc.id] = alone
            except (OperationalError, InterfaceError) as exc:
                raise ShopUnavailable(_shop_down(exc)) from None
            except Exception as exc:  # its constraint at most: a message may quote the row
                results[lc.id] = failure_text(exc)
    activities = {a.id: a for a in register.activities}
    tz = register.tz
    moment = now_utc()
    seen_suppressed: set[int] = set()
    refs: dict[str, str] = {}
    for lc, targets in items:
        result = results[lc.id]
        activity = activities.get(lc.activity)
        rule = (
            rule_text(activity, lc, [e for _, e in events.get(lc.subject, [])], tz)
            if activity
            else f"{lc.activity}: not in the register any more"
        )
        ref = refs.get(lc.subject)
        if ref is None:
            # a customer's three activities are usually due in the same batch
            ref = refs[lc.subject] = subject_ref(secret, lc.subject)
        base = {"subject_ref": ref, "activity": lc.activity, "rule": rule, "erased_at": moment}
        if activity is None or isinstance(result, str):
            outcome.failed_ids.append(lc.id)
            why = result if isinstance(result, str) else "no activity"
            for b in targets or [None]:
                columns, strategy = b.audit_text if b else ("-", "-")
                outcome.audit.append(
                    {
                        **base,
                        "target": b.name if b else "-",
                        "columns": columns,
                        "strategy": f"{strategy} (failed: {why})",
                        "outcome": "failed",
                        "rows": 0,
                    }
                )
            continue
        outcome.erased_ids.append(lc.id)
        if id(result) not in seen_suppressed:
            seen_suppressed.add(id(result))
            outcome.suppressed.extend(result.suppressed)
        if not targets:
            outcome.audit.append(
                {
                    **base,
                    "target": "-",
                    "columns": "-",
                    "strategy": "-",
                    "outcome": "nothing_to_erase",
                    "rows": 0,
                }
            )
        for b in targets:
            rows = result.rows.get((lc.subject, lc.activity, b.name), 0)
            if b.target.columns or b.target.delete_rows:
                columns, strategy = b.audit_text
                outcome.rows += rows
                outcome.audit.append(
                    {
                        **base,
                        "target": b.name,
                        "columns": columns,
                        "strategy": strategy,
                        "outcome": "erased" if rows else "nothing_to_erase",
                        "rows": rows,
                    }
                )
            if b.target.keeps and rows:
                outcome.audit.append(
                    {
                        **base,
                        "rule": b.target.note or rule,
                        "target": b.name,
                        "columns": ",".join(b.target.keeps),
                        "strategy": "kept_by_law",
                        "outcome": "kept_by_law",
                        "rows": rows,
                    }
                )
    return outcome


def _record(
    session: Session,
    run_id: int,
    register: Register,
    claimed: list[DueLifecycle],
    outcome: _BatchOutcome,
    events: dict[str, list[tuple[str, LoggedEvent]]],
    run_now: datetime,
) -> None:
    now = now_utc()
    if outcome.audit:
        _append_audit(session, [{**row, "run_id": run_id} for row in outcome.audit])
    suppression.record(
        session, _oppositions(session, register, claimed, outcome, events, run_now), now
    )
    if outcome.failed_ids:
        # Claimed as erased; they stay due for the next run, not for this one's parts, and
        # keep the time of the last erasure that succeeded (the claim set the run's).
        failed = set(outcome.failed_ids)
        lc = StoredLifecycle.__table__.c
        session.connection().execute(
            update(StoredLifecycle.__table__)
            .where(lc.id == sa.bindparam("lifecycle_id"))
            .values(
                state="active",
                failed_run_id=run_id,
                updated_at=now,
                erased_at=sa.bindparam("erased_before"),
            ),
            [
                {"lifecycle_id": c.id, "erased_before": c.erased_at}
                for c in claimed
                if c.id in failed
            ],
        )
    drop_erased_payloads(session, register, sorted({lc.subject for lc in claimed}), events)
    session.execute(
        update(PurgeRun)
        .where(PurgeRun.id == run_id)
        .values(
            erased=PurgeRun.erased + len(outcome.erased_ids),
            failed=PurgeRun.failed + len(outcome.failed_ids),
            rows=PurgeRun.rows + outcome.rows,
        )
    )


def _oppositions(
    session: Session,
    register: Register,
    claimed: list[DueLifecycle],
    outcome: _BatchOutcome,
    events: dict[str, list[tuple[str, LoggedEvent]]],
    now: datetime,
) -> dict[str, suppression.Entry]:
    """The addresses read from erased rows, each dated by its person's objection: a
    subscription the list already knows of that is later (the person came back, maybe
    under another subject) keeps the address off the list (worker/suppression.py).

    Each is marked erased now, on the real clock (a sweep's own may be set in the past),
    as are the hashes the erased subjects' own events carried (`match=`; the shop may
    have deleted its row itself): an opposition's period counts from the erasure."""
    erased_at = now_utc()
    activities = {a.id: a for a in register.activities}
    deadlines = {(lc.subject, lc.activity): lc.deadline_at for lc in claimed}
    entries: dict[str, suppression.Entry] = {}
    for subject, value_hash, activity_id in outcome.suppressed:
        at = deadlines.get((subject, activity_id), now)
        if (activity := activities.get(activity_id)) is not None:
            logged = ((e.type, e.occurred_at) for _, e in events.get(subject, []))
            at = suppression.opposed_at(activity, logged, at, now)
        entry = suppression.Entry(activity_id, opposed_at=at, erased_at=erased_at)
        suppression.add(entries, value_hash, entry)
    suppressing = {
        a.id for a in register.activities if any(t.suppress for r in a.retention for t in r.targets)
    }
    erased = set(outcome.erased_ids)
    subjects = sorted(
        {lc.subject for lc in claimed if lc.id in erased and lc.activity in suppressing}
    )
    if subjects:
        carried = (e for history in events_of(session, subjects).values() for e in history)
        for value_hash, entry in suppression.entries_from_events(carried, register).items():
            suppression.add(entries, value_hash, replace(entry, erased_at=erased_at))
    return entries


# the audit row as `lethe audit` shows it, less the id the database assigns
_AUDIT_COLUMNS = tuple(c for c in AUDIT_COLUMNS if c != "id")


def _append_audit(session: Session, rows: list[dict[str, Any]]) -> None:
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        connection.execute(Erasure.__table__.insert(), rows)
        return
    # COPY: the audit is the sweep's largest write, and COPY takes it three times faster.
    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f"COPY erasures ({', '.join(_AUDIT_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in _AUDIT_COLUMNS])
