"""Retention arithmetic: from one subject's events, each touched activity's lifecycle.

Pure: no Celery, no database, no clock of its own (`now` is passed in). The
result depends on the set of events only, never on their order or on
duplicates, so a redelivered or late event cannot move a deadline the wrong way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

import pendulum

from worker.domain.events import Event
from worker.domain.register import Activity, Matcher, Register, Rule


class State(StrEnum):
    active = "active"
    due = "due"
    held = "held"
    erased = "erased"


@dataclass(frozen=True)
class Lifecycle:
    subject: str
    activity: str
    anchor_at: pendulum.DateTime | None
    deadline_at: pendulum.DateTime | None
    held: bool
    then: str

    def state(self, now: pendulum.DateTime) -> State:
        if self.held:
            return State.held
        if self.deadline_at is not None and self.deadline_at <= now:
            return State.due
        return State.active

    def as_row(self, now: pendulum.DateTime, state: State | None = None) -> dict[str, str | None]:
        """The row `lethe simulate` and `lethe deadlines` print."""
        return {
            "subject": self.subject,
            "activity": self.activity,
            "anchor_at": _iso(self.anchor_at),
            "deadline_at": _iso(self.deadline_at),
            "state": str(state or self.state(now)),
            "then": self.then,
        }


def _iso(moment: pendulum.DateTime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True)
class _Outcome:
    anchor_at: pendulum.DateTime | None
    deadline_at: pendulum.DateTime | None

    def sort_key(self) -> tuple[int, pendulum.DateTime | None]:
        # An open-ended outcome (no deadline) outlasts any dated one.
        if self.deadline_at is None:
            return (2, self.anchor_at) if self.anchor_at else (0, None)
        return (1, self.deadline_at)


def lifecycles(
    subject: str,
    events: Iterable[Event],
    register: Register,
    only: Collection[str] | None = None,
    erased_at: Mapping[str, datetime] | None = None,
) -> list[Lifecycle]:
    """Every lifecycle of `subject` that its events open (or of the activities `only`
    names), sorted by activity id.

    `erased_at` gives, per activity, when a sweep last erased its data: only the events
    after that start a new lifecycle (what came before is gone, an erasure request
    included); an activity with none after it is left out, as nothing changed.
    """
    own = _own_events(subject, events)
    activities = [a for a in register.activities if only is None or a.id in only]
    erased_at = erased_at or {}
    found = (
        _lifecycle_of(subject, activity, own, register, erased_at.get(activity.id))
        for activity in activities
    )
    return sorted((lc for lc in found if lc is not None), key=lambda lc: lc.activity)


def lifecycle_for(
    subject: str,
    activity: Activity,
    events: Iterable[Event],
    register: Register,
    erased_at: datetime | None = None,
) -> Lifecycle | None:
    """One activity's lifecycle for `subject`, or None when no event touches it (after
    `erased_at`, the last time its data was erased, when given)."""
    return _lifecycle_of(subject, activity, _own_events(subject, events), register, erased_at)


def _own_events(subject: str, events: Iterable[Event]) -> list[Event]:
    # Keyed by id so a duplicated event counts once, the first seen as ingestion keeps it;
    # sorted so ties break the same way.
    own: dict[str, Event] = {}
    for e in events:
        if e.subject == subject:
            own.setdefault(e.id, e)
    return sorted(own.values(), key=lambda e: (e.occurred_at, e.id))


def _lifecycle_of(
    subject: str,
    activity: Activity,
    own: list[Event],
    register: Register,
    erased_at: datetime | None = None,
) -> Lifecycle | None:
    kind = subject.split(":", 1)[0]
    touching = [
        e
        for e in own
        if activity.touched_by(e.type, kind) and (erased_at is None or e.occurred_at > erased_at)
    ]
    if not touching:
        return None
    outcomes = [_apply_rule(rule, touching, register.tz) for rule in activity.retention]
    # Several rules: the data may be kept as long as any rule justifies it.
    best = max(outcomes, key=_Outcome.sort_key)
    return Lifecycle(
        subject=subject,
        activity=activity.id,
        anchor_at=best.anchor_at,
        deadline_at=best.deadline_at,
        held=is_held(own, register),
        then=activity.retention[outcomes.index(best)].then,
    )


def is_held(events: Iterable[Event], register: Register) -> bool:
    """A dispute holds the subject while one of its cases was opened after it was last
    closed; a closing that names no case closes them all."""
    holds = register.holds
    events = list(events)
    opened: dict[str | None, datetime] = {}
    closed: dict[str | None, datetime] = {}
    for e in events:
        if e.type in holds.place or e.type in holds.lift:
            case = e.data.get(holds.case) if holds.case else None
            key = None if case is None else str(case)
            latest = opened if e.type in holds.place else closed
            if key not in latest or e.occurred_at > latest[key]:
                latest[key] = e.occurred_at
    for case, at in opened.items():
        closings = [closed[k] for k in (case, None) if k in closed]
        if case is None:
            closings = list(closed.values())  # a case-less opening: any closing ends it
        if not closings or at > max(closings):
            return True
    return False


def _apply_rule(rule: Rule, events: list[Event], tz: pendulum.Timezone) -> _Outcome:
    consented = _has_consent(rule, events)
    matchers = rule.matchers
    ends = matchers["ends_without_consent" if rule.consent and not consented else "ends_on"]
    ticks = _matching(matchers["clock"], events)
    ended = _latest(_matching(ends, events))
    opened = _latest(_matching(matchers["opens_on"], events))
    clocked = _latest(ticks)
    reopens = matchers["reopens_on"]
    reopener = clocked if reopens is None else _latest(_matching(reopens, events))
    later = [e.occurred_at for e in (opened, reopener) if e is not None]

    # An end (unsubscribe, erasure request, rejection without consent) wins over
    # anything at the same instant or before it; a later clock event (or, with
    # `reopens_on`, one of those) reopens.
    if ended is not None and (not later or ended.occurred_at >= max(later)):
        anchor = in_zone(ended.occurred_at, tz)
        if clocked is not None:
            ran_out = _clock_deadline(rule, ticks, clocked, tz)
            # instants: in one zone Python compares wall times (PEP 495), and on an
            # autumn night the first 02:40 is before the second 02:30
            if ran_out.timestamp() < anchor.timestamp():
                # Ended after the clock had already run out (an erasure request years
                # late): due since then, by the clock, not since the request.
                return _Outcome(in_zone(clocked.occurred_at, tz), ran_out)
        return _Outcome(anchor, anchor)
    if opened is not None and (clocked is None or opened.occurred_at > clocked.occurred_at):
        return _Outcome(in_zone(opened.occurred_at, tz), None)
    if clocked is None:
        clocked = _without_clock(rule, events)
        ticks = [e for e in events if e.type == clocked.type]
    anchor = in_zone(clocked.occurred_at, tz)
    return _Outcome(anchor, _clock_deadline(rule, ticks, clocked, tz))


def _without_clock(rule: Rule, events: list[Event]) -> Event:
    """What starts the clock when no clock event has come: nothing may be kept forever.

    Only a consent so far: the consent itself (the latest). Only events the clock does not
    count (a shop's outbound call to a prospect who never wrote): the earliest of them,
    since the data was collected by then at the latest, and the shop's own contact later
    must not renew it (CNIL: "dernier contact émanant du prospect").
    """
    consent = rule.consent
    kinds = [*consent.given_by, *consent.otherwise_ends_on] if consent else []
    consents = _latest(e for e in events if e.type in kinds)
    return consents or min(events, key=lambda e: (e.occurred_at, e.id))


def _matching(matcher: Matcher | None, events: list[Event]) -> list[Event]:
    if matcher is None:
        return []
    if not matcher.filtered:
        return [e for e in events if e.type in matcher.types]
    return [e for e in events if matcher(e.type, e.data)]


def _clock_deadline(
    rule: Rule, ticks: list[Event], clocked: Event, tz: pendulum.Timezone
) -> pendulum.DateTime:
    """The latest clock event plus the keep. With `keep_by` every clock event counts with
    its own keep: an earlier order through a distributor that keeps 5 years outlasts a
    later one through a distributor that keeps 3, and the rows are the same rows."""
    if rule.keep_by is None:
        counted = [e for e in ticks if e.occurred_at == clocked.occurred_at]
    else:
        counted = ticks
    deadlines = (_keep(rule, e).after(in_zone(e.occurred_at, tz)) for e in counted)
    return max(deadlines, key=lambda d: d.timestamp())  # instants, as above


def in_zone(moment: datetime, tz: pendulum.Timezone) -> pendulum.DateTime:
    """`moment` as a pendulum datetime in the register's zone, ready for calendar arithmetic."""
    # fold is part of the key: in one zone, the two 02:30 of an autumn night compare
    # (and hash) equal, yet they are an hour apart.
    return _in_zone(moment, moment.fold, tz)


# Cached: a subject's latest events come back whenever one of its events arrives, and
# the conversion is most of the arithmetic's cost (its result is immutable). Bounded
# small (see worker/domain/durations.py, _add): memory must not grow with the store.
@lru_cache(maxsize=4096)
def _in_zone(moment: datetime, fold: int, tz: pendulum.Timezone) -> pendulum.DateTime:
    return pendulum.instance(moment.astimezone(tz))


def _keep(rule: Rule, event: Event):
    if rule.keep_by is not None:
        chosen = event.data.get(rule.keep_by.field)
        if chosen is not None and (keep := rule.keep_by.duration_for(chosen)) is not None:
            return keep
    return rule.keep


def _has_consent(rule: Rule, events: list[Event]) -> bool:
    if rule.consent is None:
        return False
    if any(e.type in rule.consent.given_by for e in events):
        return True
    # The flag is the consent given with the refusal (`candidate.rejected` with
    # `keep: true`), read on the latest refusal only: on any other event it is no
    # consent, and a later refusal without it withdraws it.
    flag = rule.consent.flag
    refusal = _latest(e for e in events if e.type in rule.consent.otherwise_ends_on)
    return flag is not None and refusal is not None and refusal.data.get(flag) is True


def _latest(events: Iterable[Event]) -> Event | None:
    return max(events, key=lambda e: (e.occurred_at, e.id), default=None)
