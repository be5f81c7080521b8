"""Reads and maintenance on the store for the command line and the dashboard."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import pendulum
from sqlalchemy import delete, func, select, update

from worker.domain.register import Register
from worker.domain.retention import Lifecycle, State, in_zone, lifecycles
from worker.pipeline.ingest import ingest, mark_held_by_hand, stored_row, upsert_lifecycles
from worker.store.reads import events_of, row_state
from worker.store.schema import DeadLetter, StoredEvent, StoredLifecycle
from worker.store.sessions import now_utc, one_of, transaction
from worker.store.summaries import rebuild as rebuild_summaries


def deadline_rows(
    url: str,
    register: Register,
    now: pendulum.DateTime,
    subject: str | None = None,
    due_before: pendulum.DateTime | None = None,
) -> list[dict[str, Any]]:
    """Stored lifecycles as `lethe simulate` prints them, sorted by subject then activity."""
    query = select(StoredLifecycle).order_by(StoredLifecycle.subject, StoredLifecycle.activity)
    if subject:
        query = query.where(StoredLifecycle.subject == subject)
    if due_before is not None:
        query = query.where(StoredLifecycle.deadline_at < due_before)
    with transaction(url) as session:
        rows = []
        for stored in session.scalars(query):
            lifecycle = Lifecycle(
                subject=stored.subject,
                activity=stored.activity,
                anchor_at=_local(stored.anchor_at, register),
                deadline_at=_local(stored.deadline_at, register),
                held=stored.state == State.held,
                then=stored.then,
            )
            state = row_state(stored.state, stored.deadline_at, now)
            rows.append(lifecycle.as_row(now, State(state)))
        return rows


def _local(moment: Any, register: Register) -> pendulum.DateTime | None:
    return in_zone(moment, register.tz) if moment is not None else None


def dead_letter_rows(url: str) -> list[dict[str, Any]]:
    with transaction(url) as session:
        return [
            {
                "id": letter.id,
                "received_at": letter.received_at.isoformat(),
                "event_id": letter.event_id,
                "reason": letter.reason,
            }
            for letter in session.scalars(select(DeadLetter).order_by(DeadLetter.id))
        ]


def replay_dead_letters(url: str, register: Register) -> tuple[int, int]:
    """Ingest dead letters again (after a register fix); returns (replayed, still refused)."""
    with transaction(url) as session:
        letters = list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))
        if not letters:
            return 0, 0
        session.execute(delete(DeadLetter).where(DeadLetter.id.in_([x.id for x in letters])))
        now = now_utc()
        report = ingest(session, [x.payload for x in letters], register, now)
        # Refused again, a letter keeps its first arrival: a replay must not restart the
        # clock that drops dead letters (LETHE_DEAD_LETTER_DAYS).
        first: dict[str, Any] = {}
        for letter in letters:
            first.setdefault(letter.payload, letter.received_at)
        for payload, received_at in first.items():
            session.execute(
                update(DeadLetter)
                .where(DeadLetter.received_at == now, DeadLetter.payload == payload)
                .values(received_at=received_at)
            )
    return len(letters) - report.refused, report.refused


def recompute_lifecycles(url: str, register: Register, apply: bool) -> dict[str, dict[str, int]]:
    """Recompute every stored lifecycle from the event log with `register`.

    Returns, per activity, how many deadlines move earlier or later, stay, appear
    or are dropped (an activity no longer in the register); writes only if `apply`.
    One transaction, read and written a page of subjects at a time: memory stays that
    of a page however large the store (bench/memory.py).
    """
    diff: dict[str, dict[str, int]] = defaultdict(
        lambda: {"earlier": 0, "later": 0, "unchanged": 0, "new": 0, "dropped": 0}
    )
    now = now_utc()
    known = {a.id for a in register.activities}
    lc = StoredLifecycle.__table__.c
    with transaction(url) as session:
        after: str | None = None
        while True:
            page = select(StoredEvent.subject).distinct().order_by(StoredEvent.subject)
            if after is not None:
                page = page.where(StoredEvent.subject > after)
            subjects = list(session.scalars(page.limit(_PAGE)))
            if not subjects:
                break
            after = subjects[-1]
            history = events_of(session, subjects)
            if apply:
                # the summary ingestion reads, rebuilt from the whole log
                rebuild_summaries(session, register, history)
            stored = {
                (row.subject, row.activity): row
                for row in session.execute(
                    select(lc.id, lc.subject, lc.activity, lc.state, lc.anchor_at)
                    .add_columns(lc.deadline_at, lc.erased_at)
                    .where(one_of(lc.subject, subjects, session.get_bind()))
                )
            }
            erased: dict[str, dict[str, datetime]] = defaultdict(dict)
            for row in stored.values():
                if row.erased_at is not None:
                    erased[row.subject][row.activity] = row.erased_at
            rows = []
            for subject, events in history.items():
                found = lifecycles(subject, events, register, erased_at=erased[subject])
                for lifecycle in found:
                    previous = stored.pop((subject, lifecycle.activity), None)
                    diff[lifecycle.activity][_move(previous, lifecycle)] += 1
                    rows.append(stored_row(lifecycle, previous, now))
            _left_over(session, stored.values(), known, diff, now, apply)
            mark_held_by_hand(session, rows)
            if apply:
                upsert_lifecycles(session, rows)
        # lifecycles whose subject has no event left in the log
        after_id = 0
        while True:
            orphans = list(
                session.execute(
                    select(lc.id, lc.activity, lc.erased_at)
                    .where(
                        lc.id > after_id,
                        ~select(StoredEvent.id).where(StoredEvent.subject == lc.subject).exists(),
                    )
                    .order_by(lc.id)
                    .limit(_PAGE)
                )
            )
            if not orphans:
                break
            after_id = orphans[-1].id
            _left_over(session, orphans, known, diff, now, apply)
        if not apply:
            session.rollback()
    return dict(diff)


# subjects recomputed per page
_PAGE = 500


def _left_over(
    session: Any,
    rows: Any,
    known: set[str],
    diff: dict[str, dict[str, int]],
    now: pendulum.DateTime,
    apply: bool,
) -> None:
    """Stored lifecycles the log no longer gives: erased with no event since, unchanged;
    of an activity no longer in the register, dropped (their deadline cleared)."""
    dropped = []
    for row in rows:
        if row.activity in known and row.erased_at is not None:
            diff[row.activity]["unchanged"] += 1
        else:
            diff[row.activity]["dropped"] += 1
            if row.activity not in known:
                dropped.append(row.id)
    if apply and dropped:
        session.execute(
            update(StoredLifecycle)
            .where(StoredLifecycle.id.in_(dropped))
            .values(deadline_at=None, updated_at=now)
        )


def _move(previous: Any, lifecycle: Lifecycle) -> str:
    if previous is None:
        return "new"
    old, new = previous.deadline_at, lifecycle.deadline_at
    if old == new:
        return "unchanged"
    if old is None:
        return "earlier"
    if new is None:
        return "later"
    return "earlier" if new < old else "later"


def count_lifecycles(url: str) -> int:
    with transaction(url) as session:
        return session.scalar(select(func.count()).select_from(StoredLifecycle)) or 0
