"""The event log is personal data too: payloads go once what they describe is erased.

An event whose activities are all erased keeps only its id, type, subject and
time (what deduplication and deadlines need). Sweeps drop the payloads of what
they erase; ingestion drops those of events that arrive late for a subject
already erased, which no later sweep would pick again. A dispute's events keep
theirs (the case id): it tells overlapping disputes apart, and one still open
holds whatever the shop gathers next.

The rule is applied by the database, in one UPDATE per chunk of subjects (or of
new events): nothing is read back into Python, and a subject's long history costs
the server an index walk, not a round trip and a row object per event.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import and_, exists, not_, or_, select, update
from sqlalchemy.orm import Session

from worker.domain.register import Register
from worker.store.schema import StoredEvent, StoredLifecycle
from worker.store.sessions import ONE_OF_CHUNK, chunks, one_of

_events = StoredEvent.__table__
_lifecycles = StoredLifecycle.__table__


def drop_erased_payloads(
    session: Session,
    register: Register,
    subjects: list[str],
    event_ids: list[str] | None = None,
) -> None:
    """Drop the payloads of these subjects' events (or only of `event_ids`, events just
    stored) whose activities are all erased: an event keeps its payload while one
    activity it touches has a lifecycle that is not erased and that it is not dated
    before the last erasure of (later events may have started a new lifecycle). An
    event that touches no activity goes once every lifecycle of its subject is erased;
    a dispute's events then keep their case id alone."""
    bind = session.get_bind()
    e = _events.c
    placed = [*register.holds.place, *register.holds.lift]
    if event_ids is not None:
        pages = (one_of(e.id, chunk, bind) for chunk in chunks(event_ids, ONE_OF_CHUNK))
    else:
        pages = (one_of(e.subject, chunk, bind) for chunk in chunks(subjects, ONE_OF_CHUNK))
    for page in pages:
        # most events carry no payload: leave those rows unwritten
        carrying = sa.cast(e.data, sa.Text) != "{}"
        ordinary = e.type.not_in(placed) if placed else sa.true()
        session.execute(
            update(_events)
            .where(page, carrying, ordinary, _describes_erased_data(register, bind))
            .values(data={})
            .execution_options(synchronize_session=False)
        )
        if placed:
            _keep_case_ids_only(session, register.holds.case, page, placed)


def _describes_erased_data(register: Register, bind: Any) -> Any:
    """Whether the event row of `events` describes erased data only (see above)."""
    e, lc = _events.c, _lifecycles.c
    touched = _touched(register)
    if touched is None:
        return _everything_erased()
    kind = _kind(e.subject, bind)
    # each subquery names what it reads; the rest is the row being updated (and, for the
    # lifecycle that covers a touched activity, that activity)
    touches = (
        exists().where(touched.c.type == e.type, touched.c.kind == kind).correlate_except(touched)
    )
    covered = (
        exists()
        .where(
            lc.subject == e.subject,
            lc.activity == touched.c.activity,
            or_(
                lc.state == "erased",
                and_(lc.erased_at.is_not(None), e.occurred_at <= lc.erased_at),
            ),
        )
        .correlate_except(_lifecycles)
    )
    # no touched activity without a lifecycle that covers the event
    uncovered = (
        exists()
        .where(touched.c.type == e.type, touched.c.kind == kind, not_(covered))
        .correlate_except(touched)
    )
    return or_(and_(touches, not_(uncovered)), and_(not_(touches), _everything_erased()))


def _everything_erased() -> Any:
    """The event's subject has lifecycles, and every one is erased."""
    e, lc = _events.c, _lifecycles.c
    return and_(
        exists().where(lc.subject == e.subject).correlate_except(_lifecycles),
        not_(
            exists()
            .where(lc.subject == e.subject, lc.state != "erased")
            .correlate_except(_lifecycles)
        ),
    )


def _touched(register: Register) -> Any:
    """The register's (event type, subject kind, activity) triples, as a subquery."""
    rows = register.touches()
    if not rows:
        return None
    selects = [
        select(
            sa.literal(t, sa.String).label("type"),
            sa.literal(k, sa.String).label("kind"),
            sa.literal(a, sa.String).label("activity"),
        )
        for t, k, a in rows
    ]
    return sa.union_all(*selects).subquery("touched")


def _kind(subject: Any, bind: Any) -> Any:
    """A subject's kind: what comes before its first colon (the whole, with none)."""
    if bind.dialect.name == "postgresql":
        return sa.func.split_part(subject, ":", 1)
    colon = sa.func.instr(subject, ":")
    return sa.case((colon > 0, sa.func.substr(subject, 1, colon - 1)), else_=subject)


def _keep_case_ids_only(session: Session, case: str | None, page: Any, types: list[str]) -> None:
    """Dispute events of erased data keep their case id and nothing else (a claimant's
    name or a note may sit beside it)."""
    e = _events.c
    if case is None:
        kept: Any = sa.text("'{}'")
    elif session.get_bind().dialect.name == "postgresql":
        kept = sa.text(
            "CASE WHEN data->>:case IS NULL THEN '{}'::json "
            "ELSE json_build_object(:case, data->:case) END"
        ).bindparams(case=case)
    else:
        path = "'$.\"' || :case || '\"'"
        kept = sa.text(
            f"CASE WHEN json_extract(data, {path}) IS NULL THEN '{{}}' "
            f"ELSE json_object(:case, json_extract(data, {path})) END"
        ).bindparams(case=case)
    # one statement for them all, each row keeping its own case
    session.execute(
        update(_events)
        .where(page, e.type.in_(types), sa.cast(e.data, sa.Text) != "{}", _everything_erased())
        .values(data=kept)
        .execution_options(synchronize_session=False)
    )
