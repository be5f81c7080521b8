"""The event log is personal data too: payloads go once what they describe is erased.

An event whose activities are all erased keeps only its id, type, subject and
time (what deduplication and deadlines need). Sweeps drop the payloads of what
they erase; ingestion drops those of events that arrive late for a subject
already erased, which no later sweep would pick again. A dispute's events keep
theirs (the case id): it tells overlapping disputes apart, and one still open
holds whatever the shop gathers next.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from worker.domain.register import Register
from worker.store.schema import StoredEvent, StoredLifecycle
from worker.store.sessions import ONE_OF_CHUNK, chunks, one_of


def drop_erased_payloads(
    session: Session,
    register: Register,
    subjects: list[str],
    events: Mapping[str, list[tuple[str, Any]]],
) -> None:
    """The event log is personal data too: an event whose activities are all erased keeps
    only its id, type, subject and time (what deduplication and deadlines need)."""
    states: dict[str, dict[str, str]] = defaultdict(dict)
    erased_at: dict[str, dict[str, Any]] = defaultdict(dict)
    lc = StoredLifecycle.__table__.c
    for chunk in chunks(subjects, ONE_OF_CHUNK):
        query = select(lc.subject, lc.activity, lc.state, lc.erased_at).where(
            one_of(lc.subject, chunk, session.get_bind())
        )
        for subject, activity, state, erased in session.execute(query):
            states[subject][activity] = state
            if erased is not None:
                erased_at[subject][activity] = erased
    drop: list[str] = []
    disputes: list[str] = []
    for subject in subjects:
        kind = subject.split(":", 1)[0]
        mine = states.get(subject, {})
        everything_erased = bool(mine) and all(s == "erased" for s in mine.values())
        for event_id, event in events.get(subject, []):
            if register.is_hold_event(event.type):
                # a dispute's case id tells overlapping disputes apart, after an erasure
                # too: a dispute still open holds the data the shop gathers next
                if everything_erased:
                    disputes.append(event_id)
                continue
            touched = [a.id for a in register.activities_touched(event.type, kind)]
            erased = erased_at.get(subject, {})
            if (
                touched
                and all(_covered(mine.get(a), erased.get(a), event.occurred_at) for a in touched)
            ) or (not touched and everything_erased):
                drop.append(event_id)
    for chunk in chunks(drop, ONE_OF_CHUNK):
        session.execute(
            update(StoredEvent)
            .where(
                one_of(StoredEvent.id, chunk, session.get_bind()),
                # most events carry no payload: leave those rows unwritten
                sa.cast(StoredEvent.data, sa.Text) != "{}",
            )
            .values(data={})
            .execution_options(synchronize_session=False)
        )
    _keep_case_ids_only(session, register.holds.case, disputes)


def _covered(state: str | None, erased_at: Any, occurred_at: Any) -> bool:
    """Whether an event describes erased data: its activity is erased, or it is dated
    before the activity's last erasure (later events may have started a new lifecycle)."""
    return state == "erased" or (erased_at is not None and occurred_at <= erased_at)


def _keep_case_ids_only(session: Session, case: str | None, event_ids: list[str]) -> None:
    """Dispute events of erased data keep their case id and nothing else (a claimant's
    name or a note may sit beside it)."""
    if not event_ids:
        return
    if case is None:
        kept = "'{}'"
    elif session.get_bind().dialect.name == "postgresql":
        kept = (
            "CASE WHEN data->>:case IS NULL THEN '{}'::json "
            "ELSE json_build_object(:case, data->:case) END"
        )
    else:
        path = "'$.\"' || :case || '\"'"
        kept = (
            f"CASE WHEN json_extract(data, {path}) IS NULL THEN '{{}}' "
            f"ELSE json_object(:case, json_extract(data, {path})) END"
        )
    # one statement for them all, each row keeping its own case
    session.execute(
        sa.text(f"UPDATE events SET data = {kept} WHERE id = :id"),
        [{"case": case, "id": event_id} for event_id in event_ids],
    )
