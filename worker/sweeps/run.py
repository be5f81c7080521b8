"""Sweeps: a purge run from its opening to its end.

The one sweep beat, `lethe purge` and `lethe demo` run. A run is a row of
`purge_runs`; it plans (and may stop for a DPO's approval), then one or more
parts page through due lifecycles in batches.

This module holds the run's lifecycle: open it, plan it and stop it for approval or
let it go ahead (with housekeeping), approve it, finish its parts, fail it. Each step
it takes has a module of its own, which never imports this one:

    worker/sweeps/plan.py    the plan: what the run would erase, read from the store and shop
    worker/domain/sweep_rules.py  the plan's rules, pure: approval reasons, rule text, targets
    worker/sweeps/claims.py      what is due, and a batch of it claimed
    worker/sweeps/erasure.py     a part: claimed batches erased in the shop, audited, receipts
    worker/sweeps/runs.py        what every step needs of its run: its row, result, SweepRefused
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from worker.domain.register import Register
from worker.domain.sweep_rules import register_digest
from worker.logs import log
from worker.settings import Settings
from worker.shop.binding import bind_targets, shop_engine
from worker.store import receipts, suppression
from worker.store.schema import DeadLetter, PurgeRun
from worker.store.sessions import now_utc, reading, transaction
from worker.sweeps import forgetting
from worker.sweeps.erasure import Progress, run_part
from worker.sweeps.plan import plan_sweep
from worker.sweeps.runs import HEARTBEAT_LOST_AFTER, SweepRefused, SweepResult, load_run, new_run


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
            run = new_run(
                register, schedule=schedule, now=now, moment=moment, status=status, slot_at=slot_at
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
    """The suppression list is personal data too (worker/store/suppression.py): not for ever.

    Its times are the shop's own event times, so they are compared with the run's
    clock (a demo replaying past years), never one ahead of the real clock."""
    kept_since = clock - timedelta(days=settings.sweep.suppression_days)
    with transaction(settings.database_url) as session:
        suppression.drop_expired(session, kept_since)


def _forget_erased_subjects(settings: Settings, register: Register, clock: datetime) -> None:
    """What Lethe keeps of an erased person is personal data too (worker/sweeps/forgetting.py).

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


def _close_abandoned_runs(settings: Settings, moment: datetime) -> None:
    minutes = int(HEARTBEAT_LOST_AFTER.total_seconds() // 60)
    with transaction(settings.database_url) as session:
        session.execute(
            update(PurgeRun)
            .where(
                PurgeRun.status == "running",
                PurgeRun.heartbeat_at < moment - HEARTBEAT_LOST_AFTER,
            )
            .values(
                status="failed",
                finished_at=moment,
                note=f"interrupted: no heartbeat for {minutes} minutes (worker lost); what it had "
                "not erased stayed due and is swept by a later run",
            )
        )


def resumable_run(settings: Settings, schedule: str, slot_at: datetime) -> int | None:
    """The run that claimed this slot, if it is still running (its worker was lost)."""
    with reading(settings.database_url) as session:
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
        # the note said what to approve; once approved it would mislead the dashboard
        reasons = json.loads(run.plan).get("reasons") if run.plan else None
        if reasons:
            run.note = f"approved by a DPO after it stopped: {'; '.join(reasons)}"
        run.plan = None


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
