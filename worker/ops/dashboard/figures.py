"""What the dashboard, the metrics and `lethe status` show, read from the store in aggregate.

Every read is a GROUP BY or a LIMIT in SQL, so a page costs the same with a
thousand lifecycles or a million: nothing is loaded row by row into Python.
Subjects never leave this module in clear: holds and searches show keyed hashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import pendulum
from sqlalchemy import case, func, literal, select
from sqlalchemy.orm import Session

from worker.domain.durations import Duration
from worker.domain.hashing import subject_ref, subject_refs
from worker.pipeline.holds import shown_reason
from worker.store.schema import DeadLetter, Erasure, Hold, PurgeRun, StoredEvent, StoredLifecycle

# Default grace before a due lifecycle counts as overdue: a daily sweep plus a
# day for a failed run to be retried or looked at.
DEFAULT_GRACE = Duration(days=2)
CHART_MONTHS = 12
RECENT_SWEEPS = 10
RECENT_DEAD_LETTERS = 10
HOLDS_SHOWN = 50


@dataclass(frozen=True)
class ActivityFigures:
    """Lifecycles of one activity by state; `due` includes `overdue`."""

    activity: str
    active: int = 0
    due: int = 0
    overdue: int = 0
    held: int = 0
    erased: int = 0
    oldest_overdue: datetime | None = None

    @property
    def total(self) -> int:
        return self.active + self.due + self.held + self.erased


@dataclass(frozen=True)
class Month:
    label: str  # 2026-11
    start: datetime
    end: datetime


@dataclass(frozen=True)
class DeadlineChart:
    """Deadlines falling due per month (register's time zone) and per activity."""

    months: list[Month]
    activities: list[str]
    counts: dict[tuple[str, str], int]  # (activity, month label) -> lifecycles

    def total(self, month: str | None = None, activity: str | None = None) -> int:
        return sum(
            n
            for (a, m), n in self.counts.items()
            if (month is None or m == month) and (activity is None or a == activity)
        )


@dataclass(frozen=True)
class Sweep:
    id: int
    schedule: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    due: int
    held: int
    erased: int
    failed: int
    note: str | None
    heartbeat_at: datetime | None = None
    approved_at: datetime | None = None

    @property
    def duration(self) -> float | None:
        """Seconds spent erasing: from the approval when it waited for one (the wait
        for a DPO is not the sweep's own time)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - (self.approved_at or self.started_at)).total_seconds()


@dataclass(frozen=True)
class HoldRow:
    subject_ref: str
    reason: str
    placed_at: datetime


@dataclass(frozen=True)
class DeadLetterRow:
    id: int
    received_at: datetime
    event_id: str | None
    reason: str


@dataclass(frozen=True)
class Overview:
    """Everything the dashboard's main page shows, read in one transaction."""

    now: datetime
    grace: Duration
    activities: list[ActivityFigures]
    chart: DeadlineChart
    sweeps: list[Sweep]
    holds: list[HoldRow]
    holds_total: int
    dead_letters: list[DeadLetterRow]
    dead_letters_total: int
    totals: ActivityFigures = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "totals", add_up(self.activities))


def add_up(rows: list[ActivityFigures]) -> ActivityFigures:
    return ActivityFigures(
        activity="all",
        active=sum(r.active for r in rows),
        due=sum(r.due for r in rows),
        overdue=sum(r.overdue for r in rows),
        held=sum(r.held for r in rows),
        erased=sum(r.erased for r in rows),
        oldest_overdue=min((r.oldest_overdue for r in rows if r.oldest_overdue), default=None),
    )


def overdue_cutoff(now: datetime, grace: Duration) -> datetime:
    """Deadlines at or before this instant are overdue: due for longer than the grace."""
    moment = pendulum.instance(now)
    return moment.subtract(
        years=grace.years, months=grace.months, weeks=grace.weeks, days=grace.days
    )


def lifecycle_figures(session: Session, now: datetime, grace: Duration) -> list[ActivityFigures]:
    """Lifecycles by activity and state (sorted by activity), in two aggregate queries.

    A plain GROUP BY activity, state is the one pass over every lifecycle (half
    the cost of computing the due split in that pass); the due and overdue
    counts come from a range on the (state, deadline_at) index, so they cost
    what is due, which the sweeps keep small.
    """
    lc = StoredLifecycle
    counts: dict[str, dict[str, int]] = {}
    for activity, state, count in session.execute(
        select(lc.activity, lc.state, func.count()).group_by(lc.activity, lc.state)
    ):
        counts.setdefault(activity, {})[state] = int(count)
    cutoff = overdue_cutoff(now, grace)
    is_overdue = lc.deadline_at <= cutoff
    due_query = (
        select(
            lc.activity,
            func.count(),
            func.coalesce(func.sum(case((is_overdue, 1), else_=0)), 0),
            func.min(case((is_overdue, lc.deadline_at), else_=None)),
        )
        .where(lc.state == "active", lc.deadline_at <= now)
        .group_by(lc.activity)
    )
    due = {
        activity: (int(n), int(late), oldest)
        for activity, n, late, oldest in session.execute(due_query)
    }
    rows = []
    for activity in sorted(counts):
        states = counts[activity]
        due_now, overdue, oldest = due.get(activity, (0, 0, None))
        rows.append(
            ActivityFigures(
                activity=activity,
                active=states.get("active", 0) - due_now,
                due=due_now,
                overdue=overdue,
                held=states.get("held", 0),
                erased=states.get("erased", 0),
                oldest_overdue=_aware(oldest),
            )
        )
    return rows


def overdue_count(session: Session, now: datetime, grace: Duration) -> int:
    """Only the overdue count: a range on the (state, deadline_at) index, for `lethe status`."""
    lc = StoredLifecycle
    query = select(func.count()).where(
        lc.state == "active", lc.deadline_at <= overdue_cutoff(now, grace)
    )
    return session.scalar(query) or 0


def months_ahead(now: datetime, tz: str, count: int = CHART_MONTHS) -> list[Month]:
    """This month (from `now`) and the next ones, cut at midnight on the 1st in `tz`."""
    local = pendulum.instance(now).in_timezone(tz)
    first = local.start_of("month")
    months = []
    for n in range(count):
        start = first.add(months=n)
        months.append(
            Month(
                label=start.format("YYYY-MM"),
                start=max(start, local) if n == 0 else start,
                end=start.add(months=1),
            )
        )
    return months


def deadline_chart(session: Session, now: datetime, tz: str) -> DeadlineChart:
    """Active lifecycles whose deadline falls in each of the next months, per activity.

    The month is decided in SQL by comparing with precomputed boundaries (a
    CASE), so the same query is exact on PostgreSQL and SQLite and walks only
    the (state, deadline_at) index range of the next twelve months.
    """
    lc = StoredLifecycle
    months = months_ahead(now, tz)
    bucket = case(
        *[(lc.deadline_at < m.end, literal(m.label)) for m in months],
        else_=literal(None),
    ).label("month")
    query = (
        select(lc.activity, bucket, func.count())
        .where(
            lc.state == "active",
            lc.deadline_at > now,
            lc.deadline_at < months[-1].end,
        )
        .group_by(lc.activity, bucket)
    )
    counts = {(a, m): int(n) for a, m, n in session.execute(query) if m is not None}
    activities = sorted({a for a, _ in counts})
    return DeadlineChart(months=months, activities=activities, counts=counts)


def recent_sweeps(session: Session, limit: int = RECENT_SWEEPS) -> list[Sweep]:
    query = select(PurgeRun).order_by(PurgeRun.started_at.desc(), PurgeRun.id.desc()).limit(limit)
    return [
        Sweep(
            id=run.id,
            schedule=run.schedule,
            status=run.status,
            started_at=run.started_at,
            finished_at=run.finished_at,
            due=run.due or 0,
            held=run.held or 0,
            erased=run.erased or 0,
            failed=run.failed or 0,
            note=run.note,
            heartbeat_at=run.heartbeat_at,
            approved_at=run.approved_at,
        )
        for run in session.scalars(query)
    ]


def last_finished_sweep(session: Session) -> Sweep | None:
    """The newest sweep that is not a dry run (those change nothing)."""
    runs = [s for s in recent_sweeps(session, 20) if s.status != "dry_run"]
    return runs[0] if runs else None


def active_holds(
    session: Session, secret: bytes, limit: int = HOLDS_SHOWN
) -> tuple[list[HoldRow], int]:
    """Holds placed by hand and not lifted, newest first; subjects as keyed hashes, and
    masked in the reasons (with contact details) should an old reason name them."""
    current = Hold.lifted_at.is_(None)
    total = session.scalar(select(func.count()).select_from(Hold).where(current)) or 0
    query = select(Hold).where(current).order_by(Hold.placed_at.desc()).limit(limit)
    rows = [
        HoldRow(subject_ref(secret, h.subject), shown_reason(h.reason, h.subject), h.placed_at)
        for h in session.scalars(query)
    ]
    return rows, total


def dead_letter_figures(
    session: Session, limit: int = RECENT_DEAD_LETTERS
) -> tuple[list[DeadLetterRow], int]:
    total = session.scalar(select(func.count()).select_from(DeadLetter)) or 0
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    rows = [
        DeadLetterRow(letter.id, letter.received_at, letter.event_id, letter.reason)
        for letter in session.scalars(query)
    ]
    return rows, total


def overview(
    session: Session, now: datetime, tz: str, secret: bytes, grace: Duration = DEFAULT_GRACE
) -> Overview:
    holds, holds_total = active_holds(session, secret)
    letters, letters_total = dead_letter_figures(session)
    return Overview(
        now=now,
        grace=grace,
        activities=lifecycle_figures(session, now, grace),
        chart=deadline_chart(session, now, tz),
        sweeps=recent_sweeps(session),
        holds=holds,
        holds_total=holds_total,
        dead_letters=letters,
        dead_letters_total=letters_total,
    )


@dataclass(frozen=True)
class AuditRow:
    run_id: int
    activity: str
    rule: str
    target: str
    columns: str
    strategy: str
    outcome: str
    rows: int
    erased_at: datetime


@dataclass(frozen=True)
class AuditSearch:
    """The audit trail of one subject, found by its keyed hash; the subject itself is not kept."""

    subject_ref: str
    erasures: list[AuditRow]
    lifecycles: list[tuple[str, str, datetime | None]]  # (activity, state, deadline_at)


_SUBJECT = re.compile(r"^[^:\s]+:\S+$")


def is_subject(text: str) -> bool:
    return bool(_SUBJECT.match(text))


def search_audit(session: Session, subject: str, secret: bytes, now: datetime) -> AuditSearch:
    """Erasures recorded for `subject` (matched by keyed hash) and its lifecycles' states."""
    ref = subject_ref(secret, subject)
    erasures = [
        AuditRow(
            run_id=e.run_id,
            activity=e.activity,
            rule=e.rule,
            target=e.target,
            columns=e.columns,
            strategy=e.strategy,
            outcome=e.outcome,
            rows=e.rows,
            erased_at=e.erased_at,
        )
        for e in session.scalars(
            select(Erasure)
            .where(Erasure.subject_ref.in_(subject_refs(secret, subject)))
            .order_by(Erasure.id)
            .limit(500)
        )
    ]
    lifecycles = []
    query = (
        select(StoredLifecycle.activity, StoredLifecycle.state, StoredLifecycle.deadline_at)
        .where(StoredLifecycle.subject == subject)
        .order_by(StoredLifecycle.activity)
    )
    for activity, state, deadline_at in session.execute(query):
        shown = "due" if state == "active" and deadline_at and deadline_at <= now else state
        lifecycles.append((activity, shown, deadline_at))
    return AuditSearch(subject_ref=ref, erasures=erasures, lifecycles=lifecycles)


def events_by_type(session: Session) -> dict[str, int]:
    query = select(StoredEvent.type, func.count()).group_by(StoredEvent.type)
    return {t: int(n) for t, n in session.execute(query)}


def _aware(moment: datetime | None) -> datetime | None:
    # MIN() over a CASE loses the column type, so SQLite hands back naive UTC text
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=pendulum.UTC)
    return moment
