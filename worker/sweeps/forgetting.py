"""Storage limitation applies to Lethe too: what it keeps of an erased person goes in time.

Once every lifecycle of a subject is erased, the store still names the subject in
clear: its bare events (id, type, subject, time) and its lifecycle rows (dates).
They serve a while: an old event arriving late or replayed must not start the
erased data's clock again, and a DPO answers questions in the months after. So
they are kept LETHE_FORGET_AFTER_DAYS after the subject's latest erasure, then
deleted, unless something still holds the subject: a hold placed by hand, or a
dispute still open in its log (it would hold the data the shop gathers next).
Lifted holds (a subject in clear, free-text reasons) go the same period after
their lift. The audit names people by keyed hashes only: it is the proof of
erasure, and stays.

A sweep that goes ahead (planned within its limits, or approved) does this
before erasing, beside the dead letters and the suppression list, never
ingestion; page by page, each page one short transaction, so a
store of millions of rows is never locked for long.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from worker.domain.events import Event
from worker.domain.register import Register
from worker.domain.retention import is_held
from worker.store.reads import held_by_hand
from worker.store.schema import Hold, StoredEvent, StoredLifecycle
from worker.store.sessions import (
    ONE_OF_CHUNK,
    chunks,
    custom_plans,
    keyset_after,
    lock_subjects,
    one_of,
    transaction,
)
from worker.store.summaries import forget as forget_summaries


@dataclass
class Forgotten:
    """What one pass deleted: counts only, fit for a log line."""

    subjects: int = 0
    events: int = 0
    lifecycles: int = 0
    lifted_holds: int = 0


def forget(
    url: str, register: Register, kept_since: datetime, really_since: datetime, page: int
) -> Forgotten:
    """Delete the records of subjects erased before `kept_since` and nothing holds, then
    holds lifted before it; at most `page` lifecycles looked at per transaction.

    `erased_at` is on the sweep's clock, which a sweep may set in the past (a demo, or
    `lethe purge --now`): the real time of the erasure (`updated_at`, never earlier)
    must be before `really_since` too, so that such a sweep cannot make the next one
    forget what it has just erased."""
    done = Forgotten()
    after: Any = None
    while True:
        with transaction(url) as session:
            custom_plans(session)  # pages of subjects read by `= ANY(:array)`
            rows = session.execute(_erased_before(kept_since, really_since, after, page)).all()
            if not rows:
                break
            after = rows[-1][1:]
            subjects = sorted({r[0] for r in rows})
            _forget_subjects(session, register, subjects, kept_since, really_since, done)
    with transaction(url) as session:
        # Holds are placed one by one by hand: a few thousand at most, one statement.
        lifted = delete(Hold.__table__).where(Hold.lifted_at < kept_since)
        done.lifted_holds = session.execute(lifted).rowcount
    return done


def _erased_before(
    kept_since: datetime, really_since: datetime, after: tuple[datetime, int] | None, page: int
) -> Any:
    """Lifecycles erased before `kept_since`, by (erased_at, id) on their index, of
    subjects with no lifecycle still running."""
    lc = StoredLifecycle.__table__.c
    other = StoredLifecycle.__table__.alias("other")
    query = (
        select(lc.subject, lc.erased_at, lc.id)
        .where(
            lc.state == "erased",
            lc.erased_at < kept_since,
            lc.updated_at < really_since,
            # A customer whose invoices are kept ten years has lifecycles erased long
            # before: without this, every night paged through each of them again, under
            # locks, to forget none (137 s for 1,000,000, bench/README.md "Memory").
            # `_forget_subjects` decides again under the subjects' locks; this only skips
            # those it would keep anyway (a lifecycle erased from now on is too recent).
            ~exists().where(other.c.subject == lc.subject, other.c.state != "erased"),
        )
        .order_by(lc.erased_at, lc.id)
        .limit(page)
    )
    if after is not None:
        query = query.where(*keyset_after(lc.erased_at, lc.id, after))
    return query


def _forget_subjects(
    session: Session,
    register: Register,
    subjects: list[str],
    kept_since: datetime,
    really_since: datetime,
    done: Forgotten,
) -> None:
    # Under ingestion's own locks: an event arriving meanwhile either finds the log
    # gone (and starts a lifecycle of its own), or its lifecycle is seen below.
    lock_subjects(session, subjects)
    gone = _all_erased_before(session, subjects, kept_since, really_since)
    gone -= held_by_hand(session, gone)
    gone -= _disputed(session, register, gone)
    events = StoredEvent.__table__
    lifecycles = StoredLifecycle.__table__
    for chunk in chunks(sorted(gone), ONE_OF_CHUNK):
        bind = session.get_bind()
        done.events += session.execute(
            delete(events).where(one_of(events.c.subject, chunk, bind))
        ).rowcount
        done.lifecycles += session.execute(
            delete(lifecycles).where(one_of(lifecycles.c.subject, chunk, bind))
        ).rowcount
        forget_summaries(session, chunk)
    done.subjects += len(gone)


def _all_erased_before(
    session: Session, subjects: list[str], kept_since: datetime, really_since: datetime
) -> set[str]:
    """Those whose every lifecycle is erased, the latest erasure before `kept_since` on
    the sweeps' clock and before `really_since` on the real one."""
    lc = StoredLifecycle.__table__.c
    # erased_at is set by every sweep, and by migration 0005 for erasures before it
    kept = or_(
        lc.state != "erased",
        lc.erased_at.is_(None),
        lc.erased_at >= kept_since,
        lc.updated_at >= really_since,
    )
    found: set[str] = set()
    for chunk in chunks(subjects, ONE_OF_CHUNK):
        query = (
            select(lc.subject)
            .where(one_of(lc.subject, chunk, session.get_bind()))
            .group_by(lc.subject)
            .having(func.sum(case((kept, 1), else_=0)) == 0)
        )
        found.update(session.scalars(query))
    return found


def _disputed(session: Session, register: Register, subjects: set[str]) -> set[str]:
    """Subjects with a dispute still open in their log: it holds whatever data comes next,
    so its events must stay."""
    types = [*register.holds.place, *register.holds.lift]
    if not types or not subjects:
        return set()
    table = StoredEvent.__table__
    history: dict[str, list[Event]] = defaultdict(list)
    for chunk in chunks(sorted(subjects), ONE_OF_CHUNK):
        query = select(
            table.c.id, table.c.type, table.c.subject, table.c.occurred_at, table.c.data
        ).where(one_of(table.c.subject, chunk, session.get_bind()), table.c.type.in_(types))
        for event_id, event_type, subject, occurred_at, data in session.execute(query):
            history[subject].append(Event(event_id, event_type, subject, occurred_at, data or {}))
    return {
        subject
        for subject, events in history.items()
        if is_held(events, register) or _cases_lost(events, register)
    }


def _cases_lost(events: list[Event], register: Register) -> bool:
    """More disputes opened than closed, some with no case id (the release before 0005
    dropped them with erased payloads): which one a closing ended is unknown, so the
    subject is taken as still disputed."""
    if register.holds.case is None:
        return False
    opened = [e for e in events if e.type in register.holds.place]
    closed = [e for e in events if e.type in register.holds.lift]
    unnamed = any(register.holds.case not in e.data for e in opened + closed)
    return unnamed and len(opened) > len(closed)
