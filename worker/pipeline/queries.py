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
from worker.store.sessions import chunks, now_utc, transaction
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
    """
    diff: dict[str, dict[str, int]] = defaultdict(
        lambda: {"earlier": 0, "later": 0, "unchanged": 0, "new": 0, "dropped": 0}
    )
    now = now_utc()
    known = {a.id for a in register.activities}
    with transaction(url) as session:
        subjects = list(session.scalars(select(StoredEvent.subject).distinct()))
        stored = {(lc.subject, lc.activity): lc for lc in session.scalars(select(StoredLifecycle))}
        erased: dict[str, dict[str, datetime]] = defaultdict(dict)
        for lc in stored.values():
            if lc.erased_at is not None:
                erased[lc.subject][lc.activity] = lc.erased_at
        rows = []
        for chunk in chunks(subjects, 500):
            history = events_of(session, chunk)
            if apply:
                # the summary ingestion reads, rebuilt from the whole log
                rebuild_summaries(session, register, history)
            for subject, events in history.items():
                found = lifecycles(subject, events, register, erased_at=erased[subject])
                for lifecycle in found:
                    previous = stored.pop((subject, lifecycle.activity), None)
                    diff[lifecycle.activity][_move(previous, lifecycle)] += 1
                    rows.append(stored_row(lifecycle, previous, now))
        for key, lc in list(stored.items()):
            if lc.activity in known and lc.erased_at is not None:
                # erased, and no event since: nothing to recompute
                diff[lc.activity]["unchanged"] += 1
                del stored[key]
            else:
                diff[lc.activity]["dropped"] += 1
        mark_held_by_hand(session, rows)
        if apply:
            upsert_lifecycles(session, rows)
            dropped = [lc.id for lc in stored.values() if lc.activity not in known]
            if dropped:
                session.execute(
                    update(StoredLifecycle)
                    .where(StoredLifecycle.id.in_(dropped))
                    .values(deadline_at=None, updated_at=now)
                )
        else:
            session.rollback()
    return dict(diff)


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
