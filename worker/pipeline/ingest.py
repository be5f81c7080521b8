"""Ingestion: record a batch of events once, recompute what they touch, in one transaction.

Called by the Celery task and by `lethe dead-letters --replay`; knows nothing of Celery.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pendulum
from sqlalchemy import and_, case, or_, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from worker.collector import fewer_collections
from worker.domain.events import Event, EventRefused, parse_event
from worker.domain.register import Register
from worker.domain.retention import Lifecycle, lifecycles
from worker.pipeline.delivery import dead_letter_row
from worker.store.payloads import drop_erased_payloads
from worker.store.reads import held_by_hand
from worker.store.schema import DeadLetter, StoredEvent, StoredLifecycle, UTCDateTime, require_aware
from worker.store.sessions import batch_sized, chunks, lock_subjects, one_of
from worker.store.summaries import events_after, up_to_date
from worker.store.suppression import entries_from_events, record

_CHUNK = 500
_READ_CHUNK = 5000


@dataclass
class IngestReport:
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    lifecycles: int = 0

    def add(self, other: IngestReport) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.refused += other.refused
        self.lifecycles += other.lifecycles


@fewer_collections()  # a batch's events, rows and lifecycles (worker/collector.py)
def ingest(
    session: Session, raw_events: Sequence[Any], register: Register, now: pendulum.DateTime
) -> IngestReport:
    """Store new events, dead-letter refused ones, and bring touched lifecycles up to date.

    Idempotent: events already in the log (same id) change nothing.
    """
    report = IngestReport()
    batch_sized(session)
    accepted: dict[str, Event] = {}
    dead: list[dict[str, Any]] = []
    for raw in raw_events:
        try:
            event = parse_event(raw, register)
        except EventRefused as exc:
            dead.append(dead_letter_row(raw, str(exc), now))
            continue
        accepted.setdefault(event.id, event)
    if dead:
        session.execute(DeadLetter.__table__.insert(), dead)
        report.refused = len(dead)
    new_events = _insert_new_events(session, list(accepted.values()), now)
    report.stored = len(new_events)
    report.duplicates = len(raw_events) - report.refused - report.stored
    if new_events:
        report.lifecycles = _recompute(session, new_events, register, now)
        record(session, entries_from_events(new_events, register), now)
        # An old event arriving for data already erased: no later sweep picks it up.
        drop_erased_payloads(session, register, event_ids=[e.id for e in new_events])
    return report


def _insert_new_events(
    session: Session, events: list[Event], now: pendulum.DateTime
) -> list[Event]:
    """Insert in bulk, skipping ids already logged; returns the events that were new.

    `events` hold each id once (ingest keeps the first of a batch's duplicates)."""
    by_id = {e.id: e for e in events}
    new_ids: list[str] = []
    postgres = session.get_bind().dialect.name == "postgresql"
    for chunk in chunks(events, _CHUNK):
        if postgres:
            new_ids.extend(_insert_json(session, chunk, now))
            continue
        statement = (
            # Core table, not the ORM entity: the ORM bulk path costs more than the SQL
            sqlite.insert(StoredEvent.__table__)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(StoredEvent.__table__.c.id)
        )
        rows = [
            {
                "id": e.id,
                "type": e.type,
                "subject": e.subject,
                "occurred_at": e.occurred_at,
                "data": e.data,
                "received_at": now,
            }
            for e in chunk
        ]
        new_ids.extend(session.scalars(statement, rows).all())
    return [by_id[i] for i in new_ids]


# One short statement whose rows arrive as one JSON text: a multi-row VALUES list is
# a new, long statement text per batch, which psycopg parses again every time, and
# arrays cost psycopg a quoting check per element; json.dumps is one C call.
_INSERT_EVENTS = text(
    "INSERT INTO events (id, type, subject, occurred_at, data, received_at) "
    "SELECT id, type, subject, occurred_at, data, :received_at "
    "FROM json_to_recordset(CAST(:rows AS json)) "
    "AS batch(id text, type text, subject text, occurred_at timestamptz, data json) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)


def _insert_json(session: Session, chunk: list[Event], now: pendulum.DateTime) -> list[str]:
    rows = [
        # isoformat keeps the offset, so PostgreSQL reads the same instant
        {
            "id": e.id,
            "type": e.type,
            "subject": e.subject,
            "occurred_at": e.occurred_at.isoformat(),
            "data": e.data,
        }
        for e in chunk
    ]
    return list(
        session.scalars(
            _INSERT_EVENTS,
            {
                "rows": json.dumps(rows),
                "received_at": UTCDateTime().process_bind_param(now, session.get_bind().dialect),
            },
        )
    )


def _recompute(
    session: Session, new_events: list[Event], register: Register, now: pendulum.DateTime
) -> int:
    touched: dict[str, set[str]] = defaultdict(set)
    for event in new_events:
        activities = register.activities_touched(event.type, event.kind)
        touched[event.subject].update(a.id for a in activities)
        if register.is_hold_event(event.type):
            # a hold moves every lifecycle of the subject, touched or not
            touched[event.subject].update(a.id for a in register.activities)
    subjects = sorted(touched)
    lock_subjects(session, subjects)
    # Each subject's summary, not its whole log: the cost of an event stays the same
    # however many its subject already has (worker/domain/summary.py).
    arrived: dict[str, list[Event]] = defaultdict(list)
    for event in new_events:
        arrived[event.subject].append(event)
    history = up_to_date(session, register, arrived)
    erased = erasure_times(session, subjects)
    # after an erasure, the earliest event since it may start the clock: not in the summary
    since = {
        subject: min(at for activity, at in erased[subject].items() if activity in touched[subject])
        for subject in subjects
        if any(activity in touched[subject] for activity in erased[subject])
    }
    for subject, events in events_after(session, since).items():
        history[subject] = [*history[subject], *events]
    # Whether an erased lifecycle stays erased is decided by the upsert itself, under
    # the row's lock (upsert_lifecycles); the erasure times only split its history.
    rows = []
    for subject in subjects:
        found = lifecycles(
            subject, history[subject], register, only=touched[subject], erased_at=erased[subject]
        )
        rows.extend(stored_row(lifecycle, None, now) for lifecycle in found)
    mark_held_by_hand(session, rows)
    upsert_lifecycles(session, rows)
    return len(rows)


def erasure_times(session: Session, subjects: list[str]) -> dict[str, dict[str, datetime]]:
    """Per subject and activity, when a sweep last erased the data (worker/domain/retention.py
    starts a new lifecycle from the events after it)."""
    found: dict[str, dict[str, datetime]] = defaultdict(dict)
    lc = StoredLifecycle.__table__.c
    for chunk in chunks(subjects, _READ_CHUNK):
        # Locked, and every row of the subjects, not only those with an erased_at: a
        # sweep may be erasing one right now, and its erased_at must be read once it
        # commits. PostgreSQL waits for the claim's lock and reads the row again; a row
        # filtered out on the old erased_at (NULL) would be skipped without waiting.
        query = (
            select(lc.subject, lc.activity, lc.erased_at)
            .where(one_of(lc.subject, chunk, session.get_bind()))
            .with_for_update()
        )
        for subject, activity, erased_at in session.execute(query):
            if erased_at is not None:
                found[subject][activity] = erased_at
    return found


def mark_held_by_hand(session: Session, rows: list[dict[str, Any]]) -> None:
    """`lethe hold place` holds a subject outside the event log (worker/pipeline/holds.py): its
    active lifecycles are stored as held, wherever they are computed again."""
    by_hand = held_by_hand(session, sorted({row["subject"] for row in rows}))
    for row in rows:
        if row["subject"] in by_hand and row["state"] == "active":
            row["state"] = "held"


def stored_state(lifecycle: Lifecycle, previous: Any) -> str:
    """active, held or erased; `due` is not stored, it is `active` with a past deadline.

    An erased lifecycle stays erased unless a later event starts a new one (the
    customer came back), so a late or replayed old event never resurrects it.
    """
    if previous is not None and previous.state == "erased":
        newer = (
            lifecycle.anchor_at is not None
            and previous.anchor_at is not None
            and lifecycle.anchor_at > previous.anchor_at
        )
        if not newer:
            return "erased"
    return "held" if lifecycle.held else "active"


def stored_row(lifecycle: Lifecycle, previous: Any, now: pendulum.DateTime) -> dict[str, Any]:
    return {
        "subject": lifecycle.subject,
        "activity": lifecycle.activity,
        "anchor_at": lifecycle.anchor_at,
        "deadline_at": lifecycle.deadline_at,
        "state": stored_state(lifecycle, previous),
        "then": lifecycle.then,
        "updated_at": now,
    }


def upsert_lifecycles(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Insert or update lifecycles (one row per subject and activity in `rows`)."""
    rows = list(rows)
    postgres = session.get_bind().dialect.name == "postgresql"
    for chunk in chunks(rows, _CHUNK):
        if postgres:
            _upsert_json(session, chunk)
            continue
        table = StoredLifecycle.__table__
        statement = sqlite.insert(table)
        excluded = statement.excluded
        # Decided again under the row's lock: a sweep may have erased it since
        # `previous` was read, and an old anchor must not bring it back.
        stays_erased = and_(
            table.c.state == "erased",
            or_(
                excluded.anchor_at.is_(None),
                table.c.anchor_at.is_(None),
                excluded.anchor_at <= table.c.anchor_at,
            ),
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["subject", "activity"],
                set_={
                    "anchor_at": case((stays_erased, table.c.anchor_at), else_=excluded.anchor_at),
                    "deadline_at": case(
                        (stays_erased, table.c.deadline_at), else_=excluded.deadline_at
                    ),
                    "state": case((stays_erased, "erased"), else_=excluded.state),
                    "then": excluded.then,
                    "updated_at": excluded.updated_at,
                },
            ),
            chunk,
        )


# The same upsert as SQLite's above, its rows as one JSON text (as the events'
# insert): one statement per chunk instead of one execution per row.
_STAYS_ERASED = (
    "(lifecycles.state = 'erased' AND (excluded.anchor_at IS NULL OR "
    "lifecycles.anchor_at IS NULL OR excluded.anchor_at <= lifecycles.anchor_at))"
)
_UPSERT_LIFECYCLES = text(
    'INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state, "then", '
    "updated_at) SELECT subject, activity, anchor_at, deadline_at, state, then_, :updated_at "
    "FROM json_to_recordset(CAST(:rows AS json)) AS batch(subject text, activity text, "
    "anchor_at timestamptz, deadline_at timestamptz, state text, then_ text) "
    "ON CONFLICT (subject, activity) DO UPDATE SET "
    f"anchor_at = CASE WHEN {_STAYS_ERASED} THEN lifecycles.anchor_at "
    "ELSE excluded.anchor_at END, "
    f"deadline_at = CASE WHEN {_STAYS_ERASED} THEN lifecycles.deadline_at "
    "ELSE excluded.deadline_at END, "
    f"state = CASE WHEN {_STAYS_ERASED} THEN 'erased' ELSE excluded.state END, "
    '"then" = excluded."then", updated_at = excluded.updated_at'
)


def _upsert_json(session: Session, chunk: list[dict[str, Any]]) -> None:
    rows = [
        {
            "subject": r["subject"],
            "activity": r["activity"],
            "anchor_at": _iso(r["anchor_at"]),
            "deadline_at": _iso(r["deadline_at"]),
            "state": r["state"],
            "then_": r["then"],
        }
        for r in chunk
    ]
    session.execute(
        _UPSERT_LIFECYCLES,
        {
            "rows": json.dumps(rows),
            # one time for the chunk: every row of a batch is updated at the same moment
            "updated_at": UTCDateTime().process_bind_param(
                chunk[0]["updated_at"], session.get_bind().dialect
            ),
        },
    )


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    require_aware(moment)
    return moment.isoformat()
