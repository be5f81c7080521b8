"""Domain events as the shop sends them, and their refusal when malformed.

An event is `{"id", "type", "subject": "KIND:ID", "occurred_at", "data"}`;
`occurred_at` must carry a UTC offset, because a deadline computed from a
naive time would move by an hour or two depending on where it was read.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pendulum

from worker.domain.contact_details import id_is_contact_detail, value_has_contact_details
from worker.domain.event_data import missing_data
from worker.domain.register import LONGEST_KEEP_YEARS, Register

REQUIRED = ("id", "type", "subject", "occurred_at")
# Instants Lethe accepts, in UTC. Python's datetime ends at year 9999, and a deadline
# is an anchor plus a keep (at most LONGEST_KEEP_YEARS) seen in the register's zone:
# 2999 + 1000 stays far inside it. No shop has records before 1900.
EARLIEST_YEAR = 1900
LATEST_YEAR = 2999
# A refusal reason is stored, logged and shown on the dashboard, so it never repeats
# a value the producer sent: `jean.dupont` looks as much like a catalogue name as
# `order.shiped` does. It names the closest known name instead, which is the fix.
_CLOSE_ENOUGH = 0.6


class EventRefused(ValueError):
    """The event cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    subject: str
    occurred_at: pendulum.DateTime
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def kind(self) -> str:
        return self.subject.split(":", 1)[0]

    def to_message(self) -> dict[str, Any]:
        """The JSON-safe form sent on the queue and stored in the event log."""
        return {
            "id": self.id,
            "type": self.type,
            "subject": self.subject,
            "occurred_at": self.occurred_at.isoformat(),
            "data": self.data,
        }


def parse_event(raw: Any, register: Register) -> Event:
    """Check one event (a dict, or a JSON text) against the register's catalogue."""
    if isinstance(raw, str | bytes):
        # A line read from a file ends with its newline: JSON cut short there is
        # reported by json at "line 2 column 1", which points nowhere useful.
        text = raw.rstrip(b"\r\n" if isinstance(raw, bytes) else "\r\n")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            where = (
                f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
            )
            raise EventRefused(f"not valid JSON: {exc.msg} at {where}") from None
    if not isinstance(raw, dict):
        raise EventRefused("an event is a JSON object with id, type, subject, occurred_at")
    missing = [name for name in REQUIRED if raw.get(name) in (None, "")]
    if missing:
        raise EventRefused(f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    unknown_fields = set(raw) - {*REQUIRED, "data"}
    if unknown_fields:
        raise EventRefused(
            f"{len(unknown_fields)} unknown field{'s' if len(unknown_fields) > 1 else ''}"
            f"{_not_repeated(map(str, unknown_fields), (*REQUIRED, 'data'), 'name')}: "
            f"an event has only {', '.join(REQUIRED)} and data; put extra details under 'data'"
        )
    event_id, event_type, subject = raw["id"], raw["type"], raw["subject"]
    for name, value in (("id", event_id), ("type", event_type), ("subject", subject)):
        if not isinstance(value, str):
            raise EventRefused(f"field {name} must be a string, not {type(value).__name__}")
    for name, value in (("id", event_id), ("subject", subject)):
        # what the store cannot hold is refused here, event by event, instead of
        # failing the statement that holds the whole batch
        if len(value) > 200:
            raise EventRefused(f"field {name} is longer than 200 characters")
        if "\x00" in value:
            raise EventRefused(f"field {name} contains a NUL character, which no store can hold")
    if id_is_contact_detail(event_id):
        raise EventRefused(
            "field id looks like an e-mail address or phone number: ids stay in the log "
            "after an erasure, so use the shop's own ids or a UUID"
        )
    if event_type not in register.events:
        raise EventRefused(
            f"unknown event type{_not_repeated([event_type], register.events)}: "
            f"the register {register.name!r} knows {', '.join(sorted(register.events))}"
        )
    kind = check_subject(subject, register)
    if not register.activities_touched(event_type, kind) and not register.is_hold_event(event_type):
        raise EventRefused(
            f"no activity of the register takes {event_type!r} for a {kind!r}: "
            "check the subject kind or the register"
        )
    data = raw.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EventRefused("field data must be a JSON object")
    _check_plain_json(data)
    if register.is_hold_event(event_type):
        _check_case(data, register.holds.case)
    occurred_at = parse_instant(raw["occurred_at"], "occurred_at")
    if (reason := missing_data(event_type, data)) is not None:
        raise EventRefused(reason)
    return Event(id=event_id, type=event_type, subject=subject, occurred_at=occurred_at, data=data)


def _check_plain_json(data: dict[str, Any]) -> None:
    # Refused here, event by event: a value the store's JSON cannot hold (a Decimal or a
    # date that kombu's serializer carried through, NaN, a NUL) failed the whole batch.
    try:
        text = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError):
        raise EventRefused(
            "field data holds a value JSON cannot carry as is (a date, a decimal, bytes, "
            "NaN or infinity): send it as a string or a finite number"
        ) from None
    if "\\u0000" in text:
        raise EventRefused("field data contains a NUL character, which no store can hold")


def _check_case(data: dict[str, Any], case: str | None) -> None:
    # Checked here, not only by the client: a dispute's case id is the one payload kept
    # after the erasure (worker/store/payloads.py), so a producer that publishes by task name
    # must not leave an address in it either. The value is not repeated.
    value = data.get(case) if case else None
    if isinstance(value, str) and value_has_contact_details(value):
        raise EventRefused(
            f"field data.{case} looks like an e-mail address or phone number: a dispute's "
            "case id is kept after the erasure to tell disputes apart, so send the shop's "
            "case number (e.g. LIT-2026-3), never who the dispute is with"
        )


def check_subject(subject: str, register: Register | None = None) -> str:
    """The kind of a `KIND:ID` subject, known to `register` when one is given.

    The subject itself is never quoted: a producer or a DPO who types an e-mail
    address where a subject belongs must not find it copied into logs.
    """
    kind, sep, local_id = subject.partition(":")
    if not sep or not kind or not local_id:
        raise EventRefused(
            f"subject must be KIND:ID such as customer:42 (got a subject without "
            f"{'a kind' if not sep or not kind else 'an id'})"
        )
    if id_is_contact_detail(local_id):
        raise EventRefused(
            "subject id looks like an e-mail address or phone number: name people by the "
            "shop's own ids (customer:42), which the log and the audit can keep"
        )
    if register is not None and kind not in register.subject_kinds:
        raise EventRefused(
            f"unknown subject kind{_not_repeated([kind], register.subject_kinds)}: "
            f"the register knows {', '.join(register.subject_kinds)}"
        )
    return kind


def parse_instant(value: Any, name: str = "time") -> pendulum.DateTime:
    """An ISO 8601 instant that carries its UTC offset (`Z` or `+01:00`)."""
    if not isinstance(value, str):
        raise EventRefused(f"field {name} must be an ISO 8601 string with a UTC offset")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EventRefused(
            f"field {name} is not an ISO 8601 date-time (expected e.g. 2026-03-01T10:00:00+01:00)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise EventRefused(
            f"field {name} has no UTC offset: {value!r} "
            "(add Z or +01:00; a naive time is ambiguous by hours)"
        )
    if not _within_bounds(parsed):
        raise EventRefused(
            f"field {name} is out of range: Lethe accepts instants from year {EARLIEST_YEAR} "
            f"to year {LATEST_YEAR} in UTC (a deadline up to {LONGEST_KEEP_YEARS} years later "
            "must still be a date Python and the store can hold)"
        )
    return pendulum.instance(parsed)


def _within_bounds(moment: datetime) -> bool:
    wall = moment.replace(tzinfo=None)
    # Checked on the wall-clock year first: converting 0001-01-01T00:30+01:00 to
    # UTC would itself overflow. An offset is under a day, so one year of slack
    # around the bounds is enough for the exact check in UTC below.
    if not EARLIEST_YEAR - 1 <= wall.year <= LATEST_YEAR + 1:
        return False
    return EARLIEST_YEAR <= (wall - (moment.utcoffset() or timedelta(0))).year <= LATEST_YEAR


def _not_repeated(sent: Iterable[str], known: Iterable[str], what: str = "value") -> str:
    """Words for a refusal that stand for what was sent, with the closest known names."""
    known = list(known)
    close = sorted(
        {m for value in sent for m in difflib.get_close_matches(value, known, 1, _CLOSE_ENOUGH)}
    )
    hint = f"; closest known: {', '.join(map(repr, close))}" if close else ""
    return f" (the {what} sent is not repeated, as it could be personal data{hint})"
