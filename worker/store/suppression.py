"""The suppression list: keyed hashes of addresses the shop must not write to again.

Filled by sweeps (a target's `suppress` columns, read from the shop's rows
before they go) and, at once, by the events that make such a target's data due
at once when they carry the address's keyed hash (`match={"email": ...}` in
the client): an unsubscription must be respected from the moment it is made
(art. 21(3)), not at the next night's sweep, and a shop that deletes its own
subscriber row at once leaves the sweep nothing to read the address from.

A new subscription (the rule's `opens_on` event) sent with the address's hash
lifts the suppression when it is dated after the latest opposition; Lethe never
sees the address, so a subscription sent without `match` can lift nothing. Each
address keeps the time of its latest opposition and of its latest subscription,
and is suppressed while the opposition is the later (an opposition wins a tie,
as an end does in worker/domain/retention.py). Both are maxima, so the answer does not
depend on the order events arrive in, nor on whether a sweep writes its
opposition before or after the subscription was seen. That is also why a
subscription is remembered when the address is not on the list: an opposition
dated before it, arriving late or read by a sweep from the old subscription's
row, must not put the address back.

An address is kept `LETHE_SUPPRESSION_DAYS` (three years) after the latest of
the two and of the sweep that erased the data holding it, the CNIL's measure
for an opposition list (docs/sweeps.md, "The suppression list"); an opposition is
never dropped before a sweep erased it after that opposition. Each sweep that
goes ahead drops what is older (worker/sweeps/run.py, `_housekeeping`), never the
ingestion of an event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import and_, case, delete, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.domain.durations import Duration
from worker.domain.events import Event
from worker.domain.register import Activity, Register, Rule, matching
from worker.store.schema import Suppression

# the current form, and the legacy one events stored by earlier releases carry
_KEYED_HASH = re.compile(r"^hmac-sha256(-v2)?:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Entry:
    """What is known of one address: its latest opposition and its latest subscription."""

    activity: str
    opposed_at: datetime | None = None
    subscribed_at: datetime | None = None
    # when a sweep erased data holding the address (a row it read, or the subject's
    # events that carried its hash), on the real clock
    erased_at: datetime | None = None

    @property
    def kept_from(self) -> datetime:
        """The moment its retention counts from: the latest of the three."""
        return max(t for t in (self.opposed_at, self.subscribed_at, self.erased_at) if t)

    def merged(self, other: Entry) -> Entry:
        """All together, each time the latest; the activity that named it first stays."""
        return Entry(
            self.activity,
            _later(self.opposed_at, other.opposed_at),
            _later(self.subscribed_at, other.subscribed_at),
            _later(self.erased_at, other.erased_at),
        )


def in_force(opposed_at: datetime | None, subscribed_at: datetime | None) -> bool:
    """Suppressed: an opposition, and no subscription after it."""
    return opposed_at is not None and (subscribed_at is None or subscribed_at <= opposed_at)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


def add(entries: dict[str, Entry], value_hash: str, entry: Entry) -> None:
    """Put `entry` in `entries`, merged with what is there for the same address."""
    known = entries.get(value_hash)
    entries[value_hash] = entry if known is None else known.merged(entry)


def entries_from_events(events: Iterable[Event], register: Register) -> dict[str, Entry]:
    """{keyed hash: Entry} from the hashes events carry for a suppressing target: an
    opposition when the event makes its data due at once, a subscription when it opens it."""
    found: dict[str, Entry] = {}
    for event in events:
        for activity in register.activities_touched(event.type, event.kind):
            for rule in activity.retention:
                if _due_at_once(rule, event):
                    entry = Entry(activity.id, opposed_at=event.occurred_at)
                elif matching(rule.opens_on, event.type, event.data):
                    entry = Entry(activity.id, subscribed_at=event.occurred_at)
                else:
                    continue
                for target in rule.targets:
                    if not target.applies_to(event.kind):
                        continue
                    for column in target.suppress:
                        value = event.data.get(f"{column}_hash")
                        if isinstance(value, str) and _KEYED_HASH.match(value):
                            add(found, value, entry)
    return found


def _due_at_once(rule: Rule, event: Event) -> bool:
    return matching(rule.ends_on, event.type, event.data) or (
        matching(rule.clock, event.type, event.data) and rule.keep == Duration()
    )


def _due_at_once_by_type(rule: Rule, event_type: str) -> bool:
    # The sweep reads types and times only (no payloads): an entry with a `when` counts
    # for every event of its type here, which can only move an objection later.
    return any(e.type == event_type for e in rule.ends_on) or (
        any(e.type == event_type for e in rule.clock) and rule.keep == Duration()
    )


def opposed_at(
    activity: Activity,
    events: Iterable[tuple[str, datetime]],
    deadline_at: datetime,
    now: datetime,
) -> datetime:
    """When a person whose data a sweep erases objected, from their (type, occurred_at) events:
    the latest one that made the activity's data due at once, up to `now`.

    Not the lifecycle's deadline: an erasure request years after an unsubscription is
    due since the unsubscription (worker/domain/retention.py), yet it is an objection made
    today, and its entry must not expire at the next sweep. Data that simply ran out
    its keep counts from its deadline.
    """
    ending = [
        at
        for event_type, at in events
        if at <= now and any(_due_at_once_by_type(rule, event_type) for rule in activity.retention)
    ]
    return max(ending, default=deadline_at)


def record(session: Session, entries: Mapping[str, Entry], now: datetime) -> None:
    """Merge {keyed hash: Entry} into the list: each time only ever moves later."""
    if not entries:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    # sorted: two transactions writing the same addresses lock them in the same order
    rows = [
        {
            "value_hash": h,
            "activity": e.activity,
            "added_at": now,
            "opposed_at": e.opposed_at,
            "subscribed_at": e.subscribed_at,
            "kept_from": e.kept_from,
            "erased_at": e.erased_at,
        }
        for h, e in sorted((h, _no_later_than(e, now)) for h, e in entries.items())
    ]
    statement = dialect.insert(Suppression)
    new, old = statement.excluded, Suppression.__table__.c

    def latest(column: str):
        # NULL is "not known": a known time wins over it, and only a later one replaces it
        return case(
            (or_(old[column].is_(None), new[column] > old[column]), new[column]),
            else_=old[column],
        )

    session.execute(
        statement.on_conflict_do_update(
            index_elements=["value_hash"],
            set_={c: latest(c) for c in ("opposed_at", "subscribed_at", "kept_from", "erased_at")},
        ),
        rows,
    )


def _no_later_than(entry: Entry, now: datetime) -> Entry:
    """The entry with no time after `now`: a subscription dated 2099 would otherwise lift
    every opposition until then, and keep the address for as long."""

    def capped(at: datetime | None) -> datetime | None:
        return None if at is None else min(at, now)

    return replace(
        entry, opposed_at=capped(entry.opposed_at), subscribed_at=capped(entry.subscribed_at)
    )


def drop_expired(session: Session, kept_since: datetime) -> None:
    """Drop the addresses kept since before `kept_since`; an opposition in force only once
    a sweep has erased the data that held the address. Until then the shop may still hold
    it (a dispute holds the subscriber row for years, or no sweep has run yet), and the
    list is what keeps the person from being mailed."""
    c = Suppression.__table__.c
    opposition_in_force = and_(
        c.opposed_at.is_not(None), or_(c.subscribed_at.is_(None), c.subscribed_at <= c.opposed_at)
    )
    # erased after the latest opposition: an erasure of an earlier subscription's row
    # says nothing of the row the person subscribed with again, then opposed
    erased_since = and_(c.erased_at.is_not(None), c.erased_at >= c.opposed_at)
    session.execute(
        delete(Suppression).where(c.kept_from < kept_since, or_(~opposition_in_force, erased_since))
    )
