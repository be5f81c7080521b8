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
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from worker.domain.register import Register
from worker.store.schema import StoredEvent, StoredLifecycle
from worker.store.sessions import ONE_OF_CHUNK, chunks, custom_plans, one_of

_events = StoredEvent.__table__
_lifecycles = StoredLifecycle.__table__


def drop_erased_payloads(
    session: Session,
    register: Register,
    *,
    subjects: list[str] | None = None,
    event_ids: list[str] | None = None,
) -> None:
    """Drop the payloads of the events named (every event of these `subjects`, for a sweep,
    or those of `event_ids`, events just stored) whose activities are all erased: an event
    keeps its payload while one activity it touches has a lifecycle that is not erased
    and that it is not dated before the last erasure of (later events may have started a
    new lifecycle). An event that touches no activity goes once every lifecycle of its
    subject is erased; a dispute's events then keep their case id alone."""
    bind = session.get_bind()
    e = _events.c
    placed = [*register.holds.place, *register.holds.lift]
    if (subjects is None) == (event_ids is None):
        raise ValueError("drop_erased_payloads names either subjects or event ids")
    if event_ids is not None:
        pages = (one_of(e.id, chunk, bind) for chunk in chunks(event_ids, ONE_OF_CHUNK))
    else:
        pages = (one_of(e.subject, chunk, bind) for chunk in chunks(subjects, ONE_OF_CHUNK))
    touched = _touched(register, bind)
    custom_plans(session)
    # a dispute's events keep their case alone, and only once everything is erased
    dispute = e.type.in_(placed) if placed else sa.false()
    case = register.holds.case
    # (a CASE of two bare '{}' would be text, which PostgreSQL does not cast to json)
    emptied = sa.case((dispute, _case_only(case, bind)), else_=_EMPTY) if case else _EMPTY
    for page in pages:
        erased: Any = _everything_erased()
        if touched is not None:
            kind = _kind(e.subject, bind)
            untouched = not_(
                exists()
                .where(touched.c.type == e.type, touched.c.kind == kind)
                .correlate_except(touched)
            )
            covered = _covered_events(touched, page, ~dispute, bind)
            erased = or_(e.id.in_(covered), and_(untouched, erased))
        session.execute(
            update(_events)
            .where(
                page,
                # most events carry no payload: leave those rows unwritten
                sa.cast(e.data, sa.Text) != "{}",
                or_(and_(~dispute, erased), and_(dispute, _everything_erased())),
            )
            .values(data=emptied)
            .execution_options(synchronize_session=False)
        )


_EMPTY = sa.text("'{}'")


def _covered_events(touched: Any, page: Any, ordinary: Any, bind: Any) -> Any:
    """The ids of events that touch activities, every one of which has a lifecycle that
    covers the event: erased, or erased after it (later events may have started a new
    lifecycle). One join and one grouping, planned once for the whole page."""
    e, lc = _events.c, _lifecycles.c
    covered = or_(
        lc.state == "erased", and_(lc.erased_at.is_not(None), e.occurred_at <= lc.erased_at)
    )
    return (
        select(e.id)
        .select_from(
            _events.join(
                touched, and_(touched.c.type == e.type, touched.c.kind == _kind(e.subject, bind))
            ).outerjoin(
                _lifecycles, and_(lc.subject == e.subject, lc.activity == touched.c.activity)
            )
        )
        .where(page, sa.cast(e.data, sa.Text) != "{}", ordinary)
        .group_by(e.id)
        # a touched activity with no lifecycle (NULL) leaves the event as it is
        .having(sa.func.min(sa.case((covered, 1), else_=0)) == 1)
    )


def _everything_erased() -> Any:
    """The event's subject has lifecycles, and every one is erased."""
    e, lc = _events.c, _lifecycles.c
    # A scalar subquery (NULL without lifecycles), run per event on the subject's index:
    # as EXISTS, PostgreSQL may hash the whole lifecycles table once per statement.
    every = (
        select(sa.func.min(sa.case((lc.state == "erased", 1), else_=0)))
        .where(lc.subject == e.subject)
        .correlate_except(_lifecycles)
        .scalar_subquery()
    )
    return every == 1


def _touched(register: Register, bind: Any) -> Any:
    """The register's (event type, subject kind, activity) triples, as a FROM clause."""
    rows = register.touches()
    if not rows:
        return None
    if bind.dialect.name == "postgresql":
        # three array parameters: a short statement that plans once, however long the list
        columns = [sa.literal(list(c), ARRAY(sa.Text)) for c in zip(*rows, strict=True)]
        return (
            sa.func.unnest(*columns)
            .table_valued("type", "kind", "activity")
            .render_derived(name="touched")
        )
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


def _case_only(case: str, bind: Any) -> Any:
    """A dispute event's payload reduced to its case id (a claimant's name or a note may sit
    beside it): `{}` when it has none."""
    if bind.dialect.name == "postgresql":
        return sa.text(
            "CASE WHEN data->>:case IS NULL THEN '{}'::json "
            "ELSE json_build_object(:case, data->:case) END"
        ).bindparams(case=case)
    path = "'$.\"' || :case || '\"'"
    return sa.text(
        f"CASE WHEN json_extract(data, {path}) IS NULL THEN '{{}}' "
        f"ELSE json_object(:case, json_extract(data, {path})) END"
    ).bindparams(case=case)
