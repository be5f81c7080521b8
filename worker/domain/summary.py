"""A subject's bounded event summary: per event type and data variant, its latest event.

Every retention rule (worker/domain/retention.py) reads, of a subject's events, only
the latest of some types (ends, opens, clock, reopens, the latest refusal and its
consent flag, the latest opening and closing of each dispute case), whether a type
occurred at all (consent), and with `keep_by` the latest clock event per value of the
field that picks the keep (a distributor's own duration). Each of those is the latest
event of one (type, values of the data fields the register reads on that type): keep
that one event per key and the rules give the same lifecycles as from the whole log,
after an erasure too (the latest of a key after a time is its latest, if after it).
So ingestion costs the same for a customer with 10 events and one with 50,000.

The variant is a digest of the values of the fields read on the type, never the
values themselves: the summary holds no payload (the store joins the event log for
it, so a payload dropped after an erasure is dropped here too).

One rule reads an earliest event instead: with no clock event yet (only a shop's
outbound contacts, say), the clock starts at the earliest event touching the activity
(retention._without_clock). So the summary also keeps, per type, its earliest event
(variant FIRST). After an erasure that rule reads the earliest event after the erasure,
which no bounded summary holds: ingestion adds those subjects' events after their
erasure from the log (worker/pipeline/ingest.py).

A data field a rule starts to read (a `when:` filter on a clock entry, say) must be
added to `fields_read`: a summary keyed without it would keep one event where the
rule needs the latest of each value. The register's `spec` (a digest of the fields
read) is stored with each summary row, so a register that reads new fields makes
every subject's summary stale and rebuilt from the log on its next event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from worker.domain.events import Event
from worker.domain.register import Register

# Rows written before a register was known to the store (migration 0010): stale.
STALE_SPEC = ""

Key = tuple[str, str]  # (event type, variant)

# The variant of a type's earliest event (a digest variant is 32 hex digits, '' none).
FIRST = "first"
# Bumped when what the summary keeps changes: rows written under another are stale.
_VERSION = 2

# register id -> (the register, kept so its id is not reused; fields; spec)
_CACHE: dict[int, tuple[Register, dict[str, tuple[str, ...]], str]] = {}


def fields_read(register: Register) -> dict[str, tuple[str, ...]]:
    """Per event type, the data fields the register's rules and holds read on it."""
    return _cached(register)[1]


def spec(register: Register) -> str:
    """A short digest of `fields_read`: summary rows keyed under another are stale."""
    return _cached(register)[2]


def _cached(register: Register) -> tuple[Register, dict[str, tuple[str, ...]], str]:
    found = _CACHE.get(id(register))
    if found is None or found[0] is not register:
        if len(_CACHE) >= 8:
            _CACHE.clear()  # a process uses one register; tests load many
        fields = _fields_read(register)
        kept = json.dumps([_VERSION, fields], sort_keys=True)
        digest = hashlib.sha256(kept.encode()).hexdigest()[:16]
        found = _CACHE[id(register)] = (register, fields, digest)
    return found


def _fields_read(register: Register) -> dict[str, tuple[str, ...]]:
    fields: dict[str, set[str]] = {}
    if register.holds.case:
        # is_held: the latest opening and closing of each dispute case
        for event_type in (*register.holds.place, *register.holds.lift):
            fields.setdefault(event_type, set()).add(register.holds.case)
    for activity in register.activities:
        for rule in activity.retention:
            if rule.keep_by is not None:
                # every clock event counts with its own keep, picked by this field
                for entry in rule.clock:
                    fields.setdefault(entry.type, set()).add(rule.keep_by.field)
            for entries in (rule.clock, rule.opens_on, rule.ends_on, rule.reopens_on or []):
                for entry in entries:
                    # an entry that matches on event data (`{type: contact.made, when:
                    # {direction: inbound}}`): the latest inbound and the latest outbound
                    # contact are two variants, so neither hides the other
                    if entry.when:
                        fields.setdefault(entry.type, set()).update(entry.when)
            if rule.consent is not None and rule.consent.flag:
                # only the latest refusal's flag counts; keyed anyway, it costs two rows
                for event_type in rule.consent.otherwise_ends_on:
                    fields.setdefault(event_type, set()).add(rule.consent.flag)
    return {t: tuple(sorted(f)) for t, f in sorted(fields.items())}


def variant(event: Event, register: Register) -> str:
    """The event's variant: '' for a type whose data no rule reads, else a digest of the
    values of the fields read (JSON, so 7 and "7" are two variants: finer is safe)."""
    fields = fields_read(register).get(event.type)
    if not fields:
        return ""
    values = json.dumps([event.data.get(f) for f in fields], sort_keys=True, default=str)
    return hashlib.sha256(values.encode()).hexdigest()[:32]


def _later(a: Event, b: Event) -> bool:
    # the order retention's _latest uses: time, then id
    return (a.occurred_at, a.id) > (b.occurred_at, b.id)


def summarise(events: Iterable[Event], register: Register) -> dict[Key, Event]:
    """The latest event per (type, variant) among `events` (one subject's), and the
    earliest per type (variant FIRST).

    A duplicated id counts once, the first seen, as ingestion keeps it."""
    return merge({}, events, register)[0]


def merge(
    summary: Mapping[Key, Event], events: Iterable[Event], register: Register
) -> tuple[dict[Key, Event], set[Key]]:
    """`summary` with `events` added, and the keys whose event changed."""
    merged = dict(summary)
    changed: set[Key] = set()
    seen = {e.id for e in merged.values()}
    for event in events:
        if event.id in seen:
            continue
        seen.add(event.id)
        key = (event.type, variant(event, register))
        current = merged.get(key)
        if current is None or _later(event, current):
            merged[key] = event
            changed.add(key)
        first = (event.type, FIRST)
        current = merged.get(first)
        if current is None or _later(current, event):
            merged[first] = event
            changed.add(first)
    return merged, changed


def as_rows(
    subject: str, summary: Mapping[Key, Event], keys: Iterable[Key], register: Register
) -> list[dict[str, Any]]:
    """Summary rows to store for `keys` of `subject`'s summary."""
    digest = spec(register)
    return [
        {
            "subject": subject,
            "type": key[0],
            "variant": key[1],
            "event_id": summary[key].id,
            "occurred_at": summary[key].occurred_at,
            "spec": digest,
        }
        for key in sorted(keys)
    ]
