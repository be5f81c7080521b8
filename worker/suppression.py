"""The suppression list: keyed hashes of addresses the shop must not write to again.

Filled by sweeps (a target's `suppress` columns, read from the shop's rows
before they go) and, at once, by the events that make such a target's data due
at once when they carry the address's keyed hash (`match={"email": ...}` in
the client): an unsubscription must be respected from the moment it is made
(art. 21(3)), not at the next night's sweep, and a shop that deletes its own
subscriber row at once leaves the sweep nothing to read the address from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.durations import Duration
from worker.events import Event
from worker.register import Register, Rule
from worker.store import Suppression

_KEYED_HASH = re.compile(r"^hmac-sha256:[0-9a-f]{64}$")


def hashes_to_suppress(events: Iterable[Event], register: Register) -> dict[str, str]:
    """{keyed hash: activity} carried by events that make a suppressing target due at once."""
    found: dict[str, str] = {}
    for event in events:
        for activity in register.activities_touched(event.type, event.kind):
            for rule in activity.retention:
                if not _due_at_once(rule, event.type):
                    continue
                for target in rule.targets:
                    if not target.applies_to(event.kind):
                        continue
                    for column in target.suppress:
                        value = event.data.get(f"{column}_hash")
                        if isinstance(value, str) and _KEYED_HASH.match(value):
                            found.setdefault(value, activity.id)
    return found


def _due_at_once(rule: Rule, event_type: str) -> bool:
    return event_type in rule.ends_on or (event_type in rule.clock and rule.keep == Duration())


def suppress(session: Session, hashes: Mapping[str, str], now: datetime) -> None:
    """Add {keyed hash: activity} to the list; a hash already there keeps its first entry."""
    if not hashes:
        return
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    rows = [{"value_hash": h, "activity": a, "added_at": now} for h, a in hashes.items()]
    session.execute(dialect.insert(Suppression).on_conflict_do_nothing(), rows)
