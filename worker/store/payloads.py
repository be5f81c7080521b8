"""The event log is personal data too: payloads go once what they describe is erased.

An event whose activities are all erased keeps only its id, type, subject and
time (what deduplication and deadlines need). Sweeps drop the payloads of what
they erase; ingestion drops those of events that arrive late for a subject
already erased, which no later sweep would pick again. A dispute's events keep
theirs (the case id): it tells overlapping disputes apart, and one still open
holds whatever the shop gathers next.

The rule is applied by the database, in one UPDATE per chunk of subjects (or of
new events), nothing read back into Python. The chunk's lifecycles are read once and
folded into one row per subject (`_lives`: is every one erased, and up to when each
touched activity's lifecycle covers an event); each event is joined with its
subject's row and decided by a CASE on its kind and type written from the register
(`_erased`): an index step and an expression per event besides its write. Correlated
subqueries per event cost PostgreSQL twice that (the sweep benchmark's store: 12.4
µs per event, 7.9 this way, 3.8 for a bare UPDATE), and a GROUP BY of each event's
activities joined back to the table did worse on long histories. SQLite pays for the
folding (2.3 to 4.5 µs per event), on the small stores it serves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import and_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from worker.domain.register import Register
from worker.store.schema import StoredEvent, StoredLifecycle, UTCDateTime
from worker.store.sessions import ONE_OF_CHUNK, chunks, custom_plans

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
    if (subjects is None) == (event_ids is None):
        raise ValueError("drop_erased_payloads names either subjects or event ids")
    # A dispute's events touch no activity here: they go (to their case id) only once
    # everything of their subject is erased, as an event touching nothing does.
    touches = [t for t in register.touches() if not register.is_hold_event(t[0])]
    placed = [*register.holds.place, *register.holds.lift]
    case = register.holds.case
    emptied: Any = _EMPTY
    if case and placed:
        # (a CASE of two bare '{}' would be text, which PostgreSQL does not cast to json)
        emptied = sa.case((e.type.in_(placed), _case_only(case, bind)), else_=_EMPTY)
    # most events carry no payload: leave those rows unwritten
    carries = sa.cast(e.data, sa.Text) != "{}"
    lc = _lifecycles.c
    custom_plans(session)
    for chunk in chunks(subjects if event_ids is None else event_ids, ONE_OF_CHUNK):
        if event_ids is None:
            # the page's events are found through the join, on the subject index
            lives = _lives(_among(lc.subject, chunk, bind), touches)
            statement = update(_events).where(
                e.subject == lives.c.subject, carries, _erased(e, lives, touches, bind)
            )
        else:
            # read by id alone: joined on the subject, PostgreSQL could walk a long
            # history's index entries for one new event (bench/history.py)
            named = select(e.id, e.type, e.subject, e.occurred_at)
            named = named.where(_among(e.id, chunk, bind), carries).cte("named")
            lives = _lives(_among(lc.subject, select(named.c.subject), bind), touches)
            statement = update(_events).where(
                e.id == named.c.id,
                named.c.subject == lives.c.subject,
                _erased(named.c, lives, touches, bind),
            )
        session.execute(statement.values(data=emptied).execution_options(synchronize_session=False))


_EMPTY = sa.text("'{}'")


def _lives(among: Any, touches: list[tuple[str, str, str]]) -> Any:
    """One row per subject with lifecycles among those named (one without keeps every
    payload: joined on this, its events are left out): `everything` is 1 when every one
    is erased; `covers_i`, for the i-th activity touched (`_activities`), the last moment
    its lifecycle covers an event: any (`_ANY_MOMENT`) when it is erased, its last
    erasure when it has been erased before, NULL when it never was or there is none."""
    lc = _lifecycles.c
    erased = lc.state == "erased"
    columns = [lc.subject, sa.func.min(sa.case((erased, 1), else_=0)).label("everything")]
    covers = sa.case((erased, _ANY_MOMENT), else_=lc.erased_at)
    for i, activity in enumerate(_activities(touches)):
        # (subject, activity) is unique: the one lifecycle of that activity, if any
        columns.append(sa.func.max(covers).filter(lc.activity == activity).label(f"covers_{i}"))
    return select(*columns).where(among).group_by(lc.subject).subquery("lives")


# Later than any event: a datetime cannot be.
_ANY_MOMENT = sa.literal(datetime.max.replace(tzinfo=UTC), UTCDateTime())


def _erased(event: Any, lives: Any, touches: list[tuple[str, str, str]], bind: Any) -> Any:
    """Whether the event's payload goes, against its subject's `_lives` row: every activity
    its type and kind touch covers it (erased, or erased after it), or it touches none
    and everything is erased. Never NULL: a touched activity without a lifecycle is
    false, which keeps the payload."""
    everything = lives.c.everything == 1
    index = {activity: i for i, activity in enumerate(_activities(touches))}

    def covered(activity: str) -> Any:
        covers = lives.c[f"covers_{index[activity]}"]
        return and_(covers.is_not(None), event.occurred_at <= covers)

    kinds: dict[str, dict[str, list[str]]] = {}
    for event_type, kind, activity in touches:
        kinds.setdefault(kind, {}).setdefault(event_type, []).append(activity)
    if not kinds:
        return everything
    by_type = {
        kind: sa.case(
            {t: and_(*map(covered, activities)) for t, activities in types.items()},
            value=event.type,
            else_=everything,
        )
        for kind, types in kinds.items()
    }
    return sa.case(by_type, value=_kind(event.subject, bind), else_=everything)


def _activities(touches: list[tuple[str, str, str]]) -> list[str]:
    return sorted({activity for _, _, activity in touches})


def _among(column: Any, values: Any, bind: Any) -> Any:
    """`column IN (values)`, a list or a SELECT. On PostgreSQL `column = ANY(ARRAY(...))`:
    an array it cannot count, so it finds the values on the column's index. Counted
    (`IN`, or `= ANY(:list)` planned with its values), a page of 1,000 is enough for it to
    read a small table whole, every page (the sweep benchmark's 50,000 events: 4 ms a
    page where the index takes 1), or to hash the whole lifecycles table."""
    if bind.dialect.name != "postgresql":
        return column.in_(values)
    if isinstance(values, list):
        values = select(sa.func.unnest(sa.literal(values, ARRAY(sa.Text))))
    return column == sa.any_(sa.func.array(values.scalar_subquery()))


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
