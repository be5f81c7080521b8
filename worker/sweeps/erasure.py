"""Erasing: a part of a run claims due lifecycles batch by batch, erases their data in
the shop, audits it and marks them erased.

    store transaction:  claim a batch: lock it, mark it erased as of the run's clock
                        (the rows chosen FOR UPDATE SKIP LOCKED on PostgreSQL);
                        name each lifecycle as the audit will (subject reference, rule)
      shop transaction: apply the strategies of every claimed lifecycle
                        receipts committed for deleted rows (worker/store/receipts.py)
                        commit
      audit rows, suppression hashes, failures set back to active (and to their
      earlier erasure time), payloads dropped
    commit; receipts dropped

A lifecycle whose erasure failed is due again for the next run, never for the run
that failed it: its parts skip it, so a run tries each lifecycle once and audits a
failure once.

On a PostgreSQL store the claim, the shop's transaction and the rest run in three
overlapping stages, each batch in its own (worker/sweeps/stages.py).

A killed worker loses at most its open batches (three on a PostgreSQL store, one on
SQLite): the store rolls back, the claimed lifecycles are due again, and the
strategies are idempotent, so the next sweep finishes them with one audit row per
erasure. If the shop had committed, rows it deleted cannot be found again: the next
sweep takes their count and suppression hashes from the receipts. A batch whose
store transaction fails is the same case, and so is the batch claimed beside it.

The claim is worker/sweeps/claims.py; the run a part belongs to is worker/sweeps/run.py, whose
`run_sweep` runs the first part (tasks/sweep.py runs the others). The audit rows
written here are read back by worker/store/audit.py.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from worker.domain.hashing import subject_ref
from worker.domain.register import Register
from worker.domain.sweep_rules import DueLifecycle, LoggedEvent, rule_text
from worker.settings import Settings
from worker.shop.apply import Applied, apply_targets
from worker.shop.binding import BoundTarget, ShopUnavailable, shop_engine
from worker.shop.constraints import failure_text
from worker.store import audit, receipts, suppression
from worker.store.payloads import drop_erased_payloads
from worker.store.reads import events_of
from worker.store.schema import PurgeRun, StoredEvent, StoredLifecycle
from worker.store.sessions import (
    ONE_OF_CHUNK,
    batch_sized,
    chunks,
    engine_for,
    now_utc,
    one_of,
    transaction,
)
from worker.sweeps.claims import claim_batch, subject_targets, targets_of
from worker.sweeps.runs import SweepRefused, ahead_of_the_clock, heartbeat, load_run
from worker.sweeps.stages import run_batches

Progress = Callable[[int], None]


@dataclass
class _BatchOutcome:
    audit: list[audit.AuditRow] = field(default_factory=list)
    erased_ids: list[int] = field(default_factory=list)
    failed_ids: list[int] = field(default_factory=list)
    rows: int = 0
    suppressed: list[tuple[str, str, str]] = field(default_factory=list)


def run_part(
    settings: Settings,
    register: Register,
    bound: dict[str, list[BoundTarget]],
    run_id: int,
    now: datetime,
    progress: Progress | None = None,
) -> None:
    """Erase due lifecycles batch by batch until none is left to claim.

    Each batch goes through three stages: claimed (its store transaction opens), applied
    to the shop (which commits), recorded in the store (audit, suppression, payloads) and
    committed. On a PostgreSQL store the stages of three batches overlap
    (worker/sweeps/stages.py); a failure leaves what an interrupted batch always leaves
    (module doc).
    """
    # Whoever reaches the broker can name any run: only one that is running (planned
    # within its limits, or approved by a DPO) erases anything.
    run = load_run(settings, run_id)
    if run.status != "running":
        raise SweepRefused(f"run {run_id} is {run.status}, not running: it erases nothing")
    if ahead_of_the_clock(run.now_at):
        raise SweepRefused(f"run {run_id} is set ahead of the real clock: it erases nothing")
    engine = shop_engine(settings.shop_database_url)
    run_batches(
        partial(_claim_next, settings, register, run_id, now),
        partial(_apply_batch, settings, bound, engine, run_id),
        partial(_record_batch, settings, register, run_id, now, progress),
        # SQLite has one writer: a second batch's claim would wait for this one's commit
        overlap=engine_for(settings.database_url).dialect.name == "postgresql",
    )


class _Abandoned(Exception):
    """Rolls a batch's store transaction back when another stage failed."""


@dataclass
class _Batch:
    """A claimed batch, its store transaction open until it is recorded or abandoned; once
    applied to the shop, what that did."""

    transaction: ExitStack
    session: Session
    claimed: list[DueLifecycle]
    labels: dict[int, _Label]
    items: list[tuple[DueLifecycle, list[BoundTarget]]] = field(default_factory=list)
    results: dict[int, Applied | str] = field(default_factory=dict)
    keeper: _ReceiptKeeper | None = None

    @property
    def after(self) -> tuple[datetime, int]:
        return (self.claimed[-1].deadline_at, self.claimed[-1].id)

    def abandon(self) -> None:
        # rolled back: its lifecycles are due again
        self.transaction.__exit__(_Abandoned, _Abandoned(), None)


def _claim_next(
    settings: Settings,
    register: Register,
    run_id: int,
    now: datetime,
    after: tuple[datetime, int] | None,
) -> _Batch | None:
    """The first stage: claim the next batch in a store transaction left open, and name
    its lifecycles as the audit will; None when nothing is left to claim."""
    stack = ExitStack()
    session = stack.enter_context(transaction(settings.database_url))
    try:
        batch_sized(session)  # the batch is recorded in this transaction too
        claimed = claim_batch(session, run_id, now, after, settings.sweep.batch)
        if not claimed:
            stack.close()
            return None
        # Done here, not when the batch is recorded: recording is the longest stage, and
        # what the audit calls a lifecycle does not depend on what the shop did.
        labels = _labels(session, register, claimed, settings.secret)
    except BaseException:
        stack.__exit__(*sys.exc_info())
        raise
    return _Batch(stack, session, claimed, labels)


def _apply_batch(
    settings: Settings,
    bound: dict[str, list[BoundTarget]],
    engine: sa.Engine,
    run_id: int,
    batch: _Batch,
) -> _Batch:
    """The second stage: apply a claimed batch to the shop (committed there), its receipts
    committed first."""
    receipts_at = receipts.receipts_url(settings.database_url)
    batch.keeper = _ReceiptKeeper.for_batch(receipts_at, run_id, batch.claimed, bound)
    batch.items = targets_of(batch.claimed, bound)
    batch.results = _apply(engine, batch.items, settings.secret, batch.keeper)
    return batch


def _record_batch(
    settings: Settings,
    register: Register,
    run_id: int,
    now: datetime,
    progress: Progress | None,
    batch: _Batch,
) -> None:
    """The third stage: audit the batch, record it in the store and commit."""
    receipts_at = receipts.receipts_url(settings.database_url)
    in_store = receipts.in_store(settings.database_url)
    with batch.transaction:
        session = batch.session
        outcome = _outcome(batch.items, batch.results, batch.labels)
        _record(session, run_id, register, batch.claimed, outcome, now)
        if in_store and batch.keeper is not None:
            # dropped with the commit of the audit rows they stood for
            receipts.forget(session.connection(), batch.keeper.touched)
        heartbeat(session, run_id)
    if not in_store and batch.keeper is not None:
        receipts.forget(receipts_at, batch.keeper.touched)  # the audit rows are committed
    if progress:
        progress(len(batch.claimed))


def _needs_receipt(bound: BoundTarget) -> bool:
    """Deleted rows cannot be counted twice, nor anonymised addresses hashed again."""
    return bound.target.delete_rows or bool(bound.target.suppress)


@dataclass
class _ReceiptKeeper:
    """A batch's receipts (worker/store/receipts.py): an earlier try's, read at claim time, and
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
        needing = {a for a, targets in bound.items() if any(map(_needs_receipt, targets))}
        ids = [lc.id for lc in claimed if lc.activity in needing]
        earlier = receipts.load(url, ids) if ids else {}
        return cls(url, run_id, earlier, {i for i, _ in earlier})

    def keep(self, items: list[tuple[DueLifecycle, list[BoundTarget]]], applied: Applied) -> None:
        """Add what an earlier try already deleted to `applied`, then commit this try's
        receipts; called inside the shop transaction, before it commits."""
        suppressed: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for subject, value_hash, activity in applied.suppressed:
            suppressed[(subject, activity)].append((value_hash, activity))
        written: list[tuple[int, str, receipts.Receipt]] = []
        # a batch's lifecycles share their target lists (claims.targets_of): filtered once
        filtered: dict[int, list[BoundTarget]] = {}
        for lc, targets in items:
            needing = filtered.get(id(targets))
            if needing is None:
                needing = filtered[id(targets)] = [b for b in targets if _needs_receipt(b)]
            for b in needing:
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


def _ending_events(
    session: Session, register: Register, subjects: list[str]
) -> dict[str, list[LoggedEvent]]:
    """The batch's events of a type that ends an activity (the audit's rule names the one
    that ended a lifecycle): a few per subject, however long its history."""
    ending = sorted({t for a in register.activities for t in a.ending_events})
    found: dict[str, list[LoggedEvent]] = defaultdict(list)
    if not ending:
        return found
    e = StoredEvent.__table__.c
    for chunk in chunks(subjects, ONE_OF_CHUNK):
        query = select(e.subject, e.type, e.occurred_at).where(
            one_of(e.subject, chunk, session.get_bind()), e.type.in_(ending)
        )
        for subject, event_type, occurred_at in session.execute(query).all():
            found[subject].append(LoggedEvent(event_type, occurred_at))
    return found


class _Label(NamedTuple):
    """A lifecycle as its audit rows name it."""

    ref: str  # the subject's keyed hash
    rule: str
    in_register: bool  # its activity is still in the register (else it cannot be erased)


def _labels(
    session: Session, register: Register, claimed: list[DueLifecycle], secret: bytes
) -> dict[int, _Label]:
    """Each lifecycle's subject reference and rule, as its audit rows name them."""
    events = _ending_events(session, register, sorted({lc.subject for lc in claimed}))
    activities = {a.id: a for a in register.activities}
    tz = register.tz
    refs: dict[str, str] = {}
    labels = {}
    for lc in claimed:
        ref = refs.get(lc.subject)
        if ref is None:
            # a customer's three activities are usually due in the same batch
            ref = refs[lc.subject] = subject_ref(secret, lc.subject)
        activity = activities.get(lc.activity)
        if activity is None:
            labels[lc.id] = _Label(ref, f"{lc.activity}: not in the register any more", False)
        else:
            rule = rule_text(activity, lc, events.get(lc.subject, ()), tz)
            labels[lc.id] = _Label(ref, rule, True)
    return labels


def _apply(
    engine: sa.Engine,
    items: list[tuple[DueLifecycle, list[BoundTarget]]],
    secret: bytes,
    keeper: _ReceiptKeeper,
) -> dict[int, Applied | str]:
    """Apply a batch to the shop: what each lifecycle's erasure did, or why it failed."""
    pairs = subject_targets(items)
    try:
        # The whole batch in one shop transaction: each lifecycle is erased whole or
        # not at all, at the cost of one transaction per batch instead of per subject.
        with engine.begin() as connection:
            applied = apply_targets(connection, pairs, secret)
            keeper.keep(items, applied)
        return {lc.id: applied for lc, _ in items}
    except (OperationalError, InterfaceError) as exc:
        raise ShopUnavailable(shop_down(exc)) from None
    except Exception:
        # One subject's row broke a constraint, or a value no strategy could read (or a
        # bug met on one row): retry subject by subject so the others still go, and only
        # that one is audited as failed instead of every sweep dying on it.
        results: dict[int, Applied | str] = {}
        for lc, targets in items:
            try:
                with engine.begin() as connection:
                    alone = apply_targets(connection, [(lc.subject, b) for b in targets], secret)
                    keeper.keep([(lc, targets)], alone)
                results[lc.id] = alone
            except (OperationalError, InterfaceError) as exc:
                raise ShopUnavailable(shop_down(exc)) from None
            except Exception as exc:  # its constraint at most: a message may quote the row
                results[lc.id] = failure_text(exc)
        return results


def _outcome(
    items: list[tuple[DueLifecycle, list[BoundTarget]]],
    results: dict[int, Applied | str],
    labels: dict[int, _Label],
) -> _BatchOutcome:
    """The batch's audit rows, counts and suppression hashes, from what the shop did."""
    outcome = _BatchOutcome()
    seen_suppressed: set[int] = set()
    trail = outcome.audit
    for lc, targets in items:
        result = results[lc.id]
        ref, rule, in_register = labels[lc.id]
        if not in_register or isinstance(result, str):
            outcome.failed_ids.append(lc.id)
            why = result if isinstance(result, str) else "no activity"
            for b in targets or [None]:
                columns, strategy = b.audit_text if b else ("-", "-")
                name = b.name if b else "-"
                failed = f"{strategy} (failed: {why})"
                trail.append((ref, lc.activity, rule, name, columns, failed, "failed", 0))
            continue
        outcome.erased_ids.append(lc.id)
        if id(result) not in seen_suppressed:
            seen_suppressed.add(id(result))
            outcome.suppressed.extend(result.suppressed)
        if not targets:
            trail.append((ref, lc.activity, rule, "-", "-", "-", "nothing_to_erase", 0))
        counted = result.rows
        for b in targets:
            rows = counted.get((lc.subject, lc.activity, b.name), 0)
            target = b.target
            if target.columns or target.delete_rows:
                columns, strategy = b.audit_text
                outcome.rows += rows
                erased = "erased" if rows else "nothing_to_erase"
                trail.append((ref, lc.activity, rule, b.name, columns, strategy, erased, rows))
            if target.keeps and rows:
                keeps = ",".join(target.keeps)
                why = target.note or rule
                trail.append(
                    (ref, lc.activity, why, b.name, keeps, "kept_by_law", "kept_by_law", rows)
                )
    return outcome


def _record(
    session: Session,
    run_id: int,
    register: Register,
    claimed: list[DueLifecycle],
    outcome: _BatchOutcome,
    run_now: datetime,
) -> None:
    now = now_utc()
    audit.append(session.connection(), run_id, now, outcome.audit)
    suppression.record(session, _oppositions(session, register, claimed, outcome, run_now), now)
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
    drop_erased_payloads(session, register, subjects=sorted({lc.subject for lc in claimed}))
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
    now: datetime,
) -> dict[str, suppression.Entry]:
    """The addresses read from erased rows, each dated by its person's objection: a
    subscription the list already knows of that is later (the person came back, maybe
    under another subject) keeps the address off the list (worker/store/suppression.py).

    Each is marked erased now, on the real clock (a sweep's own may be set in the past),
    as are the hashes the erased subjects' own events carried (`match=`; the shop may
    have deleted its row itself): an opposition's period counts from the erasure."""
    erased_at = now_utc()
    activities = {a.id: a for a in register.activities}
    suppressing = {
        a.id for a in register.activities if any(t.suppress for r in a.retention for t in r.targets)
    }
    erased = set(outcome.erased_ids)
    carriers = {lc.subject for lc in claimed if lc.id in erased and lc.activity in suppressing}
    # only these subjects' histories are read: people on a list, not the whole batch
    history = events_of(session, sorted(carriers | {s for s, _, _ in outcome.suppressed}))
    deadlines = {(lc.subject, lc.activity): lc.deadline_at for lc in claimed}
    entries: dict[str, suppression.Entry] = {}
    for subject, value_hash, activity_id in outcome.suppressed:
        at = deadlines.get((subject, activity_id), now)
        if (activity := activities.get(activity_id)) is not None:
            logged = ((e.type, e.occurred_at) for e in history.get(subject, []))
            at = suppression.opposed_at(activity, logged, at, now)
        entry = suppression.Entry(activity_id, opposed_at=at, erased_at=erased_at)
        suppression.add(entries, value_hash, entry)
    carried = (e for subject in sorted(carriers) for e in history.get(subject, []))
    for value_hash, entry in suppression.entries_from_events(carried, register).items():
        suppression.add(entries, value_hash, replace(entry, erased_at=erased_at))
    return entries


def shop_down(exc: Exception) -> str:
    return (
        f"the shop database became unreachable ({type(exc).__name__}); this batch was rolled "
        "back, due lifecycles stay due and the next sweep tries again"
    )
