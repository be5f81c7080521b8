"""The event summary in the store: read, kept up to date with new events, rebuilt from the log.

Ingestion reads a subject's summary (a few rows per event type) instead of its whole
event log; worker/domain/summary.py says why the lifecycles are the same. The summary is
written in the ingesting transaction, under the subjects' locks (lock_subjects).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, cast, delete, or_, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from worker.domain.event_data import read_stored
from worker.domain.events import Event
from worker.domain.register import Register
from worker.domain.summary import Key, as_rows, merge, spec, summarise
from worker.store.reads import events_of
from worker.store.schema import EventSummary, StoredEvent, UTCDateTime
from worker.store.sessions import chunks, custom_plans, one_of

_READ_CHUNK = 5000
_WRITE_CHUNK = 1000
_ERASED_CHUNK = 200  # (subject, moment) pairs per query


def up_to_date(
    session: Session, register: Register, new_events: Mapping[str, list[Event]]
) -> dict[str, list[Event]]:
    """Per subject of `new_events` (already in the log, subjects locked), the events its
    lifecycles are computed from: its summary with the new events in, written back."""
    stored, stale = _read(session, list(new_events), register)
    rebuilt = sorted(stale)
    rows: list[dict[str, Any]] = []
    found: dict[str, list[Event]] = {}
    if rebuilt:
        # a register reading other fields, or a log from before migration 0010
        history = events_of(session, rebuilt)
        for subject in rebuilt:
            summary = summarise(history.get(subject, []), register)
            rows.extend(as_rows(subject, summary, summary, register))
            found[subject] = list(summary.values())
        forget(session, rebuilt)
    for subject, events in new_events.items():
        if subject in stale:
            continue
        summary, changed = merge(stored.get(subject, {}), events, register)
        rows.extend(as_rows(subject, summary, changed, register))
        found[subject] = list(summary.values())
    write(session, rows)
    return found


def events_after(session: Session, since: Mapping[str, datetime]) -> dict[str, list[Event]]:
    """Per subject, its logged events after a moment (its earliest erasure): with no clock
    event since, the clock starts at the earliest of them, which the summary, keeping a
    type's earliest event ever, cannot give (worker/domain/summary.py)."""
    found: dict[str, list[Event]] = defaultdict(list)
    e = StoredEvent.__table__.c
    for chunk in chunks(sorted(since), _ERASED_CHUNK):
        after = or_(*(and_(e.subject == s, e.occurred_at > since[s]) for s in chunk))
        query = select(e.id, e.type, e.subject, e.occurred_at, cast(e.data, Text)).where(after)
        for event_id, event_type, subject, occurred_at, data in session.execute(query):
            payload = json.loads(data) if data and data != "{}" else {}
            found[subject].append(
                Event(event_id, event_type, subject, occurred_at, read_stored(event_type, payload))
            )
    return found


def _read(
    session: Session, subjects: list[str], register: Register
) -> tuple[dict[str, dict[Key, Event]], set[str]]:
    """The stored summaries, and the subjects whose summary is stale."""
    s = EventSummary.__table__.c
    e = StoredEvent.__table__.c
    current = spec(register)
    found: dict[str, dict[Key, Event]] = defaultdict(dict)
    stale: set[str] = set()
    bind = session.get_bind()
    custom_plans(session)
    for chunk in chunks(subjects, _READ_CHUNK):
        query = (
            select(
                s.subject, s.type, s.variant, s.event_id, s.occurred_at, s.spec, cast(e.data, Text)
            )
            .select_from(
                EventSummary.__table__.outerjoin(StoredEvent.__table__, e.id == s.event_id)
            )
            .where(one_of(s.subject, chunk, bind))
        )
        for subject, event_type, variant, event_id, occurred_at, row_spec, data in session.execute(
            query
        ):
            if row_spec != current:
                stale.add(subject)
                continue
            payload = json.loads(data) if data and data != "{}" else {}
            # leniently, as events_of: a contact stored before directions were required
            # reads as inbound, here as when the summary was built from the log
            found[subject][(event_type, variant)] = Event(
                event_id, event_type, subject, occurred_at, read_stored(event_type, payload)
            )
    return found, stale


def write(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or replace summary rows (each key once in `rows`)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    for chunk in chunks(rows, _WRITE_CHUNK):
        if postgres:
            _write_json(session, chunk)
            continue
        statement = sqlite.insert(EventSummary.__table__)
        excluded = statement.excluded
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["subject", "type", "variant"],
                set_={
                    "event_id": excluded.event_id,
                    "occurred_at": excluded.occurred_at,
                    "spec": excluded.spec,
                },
            ),
            chunk,
        )


# rows as one JSON text, as the events' insert (worker/pipeline/ingest.py)
_WRITE = text(
    "INSERT INTO event_summary (subject, type, variant, event_id, occurred_at, spec) "
    "SELECT subject, type, variant, event_id, occurred_at, spec "
    "FROM json_to_recordset(CAST(:rows AS json)) AS batch(subject text, type text, "
    "variant text, event_id text, occurred_at timestamptz, spec text) "
    "ON CONFLICT (subject, type, variant) DO UPDATE SET event_id = excluded.event_id, "
    "occurred_at = excluded.occurred_at, spec = excluded.spec"
)


def _write_json(session: Session, chunk: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect
    utc = UTCDateTime()
    rows = [
        {**row, "occurred_at": utc.process_bind_param(row["occurred_at"], dialect).isoformat()}
        for row in chunk
    ]
    session.execute(_WRITE, {"rows": json.dumps(rows)})


def forget(session: Session, subjects: Iterable[str]) -> int:
    """Delete these subjects' summaries (their log is deleted, or rebuilt from it)."""
    table = EventSummary.__table__
    gone = 0
    for chunk in chunks(sorted(subjects), _READ_CHUNK):
        gone += session.execute(
            delete(table).where(one_of(table.c.subject, chunk, session.get_bind()))
        ).rowcount
    return gone


def rebuild(session: Session, register: Register, history: Mapping[str, list[Event]]) -> None:
    """Replace these subjects' summaries with those of their whole logs (`lethe recompute`)."""
    forget(session, history)
    rows: list[dict[str, Any]] = []
    for subject, events in history.items():
        summary = summarise(events, register)
        rows.extend(as_rows(subject, summary, summary, register))
    write(session, rows)
