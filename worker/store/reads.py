"""Reads of the store that several rooms share: a subject's event log, the holds placed
by hand, and the state a stored lifecycle shows at a given time."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pendulum
from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from worker.domain.event_data import read_stored
from worker.domain.events import Event
from worker.domain.retention import State
from worker.store.schema import Hold, StoredEvent
from worker.store.sessions import ONE_OF_CHUNK, chunks, custom_plans, one_of

# subjects read per statement: one array parameter, so the statement stays small
_READ_CHUNK = 5000


def events_of(session: Session, subjects: list[str]) -> dict[str, list[Event]]:
    history: dict[str, list[Event]] = defaultdict(list)
    table = StoredEvent.__table__
    custom_plans(session)
    # The payload as text, decoded only when there is one: most events carry none,
    # and a JSON decode per row read was a tenth of a batch's time.
    data = cast(table.c.data, Text)
    for chunk in chunks(subjects, _READ_CHUNK):
        query = select(table.c.id, table.c.type, table.c.subject, table.c.occurred_at, data).where(
            one_of(table.c.subject, chunk, session.get_bind())
        )
        for event_id, event_type, subject, occurred_at, payload in session.execute(query).all():
            history[subject].append(
                Event(
                    event_id,
                    event_type,
                    subject,
                    occurred_at,
                    # leniently: the log holds events of releases that required less
                    read_stored(event_type, _payload(payload)),
                )
            )
    return history


def held_by_hand(session: Session, subjects: Iterable[str]) -> set[str]:
    """The subjects among these that have an open hold placed by hand."""
    found: set[str] = set()
    for chunk in chunks(subjects, ONE_OF_CHUNK):
        found.update(
            session.scalars(
                select(Hold.subject).where(
                    one_of(Hold.subject, chunk, session.get_bind()), Hold.lifted_at.is_(None)
                )
            )
        )
    return found


def row_state(stored: str, deadline_at: Any, now: pendulum.DateTime) -> str:
    if stored in (State.erased, State.held):
        return stored
    return State.due if deadline_at is not None and deadline_at <= now else State.active


def _payload(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text and text != "{}" else {}
