"""The processing register: activities, their retention rules, loaded and checked from YAML.

Every problem found is reported as `file:line: message`, all at once, so a DPO
fixes a broken register in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, Self

import pendulum
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from worker.domain.durations import Duration, DurationError, parse_duration
from worker.domain.sources import Source

END_ACTIONS = ("anonymise", "pseudonymise", "delete", "archive")


class LegalBasis(StrEnum):
    """GDPR art. 6(1) legal bases, as the register's `legal_basis` names them."""

    consent = "consent"
    contract = "contract"
    legal_obligation = "legal_obligation"
    vital_interests = "vital_interests"
    public_task = "public_task"
    legitimate_interest = "legitimate_interest"


LEGAL_BASIS_LABELS = {
    LegalBasis.consent: "Consent (art. 6(1)(a))",
    LegalBasis.contract: "Performance of a contract (art. 6(1)(b))",
    LegalBasis.legal_obligation: "Legal obligation (art. 6(1)(c))",
    LegalBasis.vital_interests: "Vital interests (art. 6(1)(d))",
    LegalBasis.public_task: "Public task (art. 6(1)(e))",
    LegalBasis.legitimate_interest: "Legitimate interest (art. 6(1)(f))",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with `update`, its cached properties (the touch index, a rule's event
        types and matchers) are worked out again from the new fields, where pydantic's
        copy would carry the original's along."""
        copied = super().model_copy(update=update, deep=deep)
        if update:
            for name in _cached_names(type(self)):
                copied.__dict__.pop(name, None)
        return copied


def _cached_names(cls: type) -> set[str]:
    return {
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, cached_property)
    }


# The longest keep a register may write. Events are accepted up to year 2999
# (worker/domain/events.py), so every deadline stays a date Python and the store can hold.
LONGEST_KEEP_YEARS = 1000


def _duration(value: Any) -> Duration:
    if isinstance(value, Duration):
        duration = value
    else:
        try:
            duration = parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    # counted in months, a day left over as a whole month: coarse, and on the safe side
    months = duration.years * 12 + duration.months + -(-(duration.weeks * 7 + duration.days) // 28)
    if months > LONGEST_KEEP_YEARS * 12:
        raise ValueError(
            f"duration {duration} is longer than {LONGEST_KEEP_YEARS} years, the longest keep "
            "Lethe can compute a deadline for"
        )
    return duration


class Purpose(_Strict):
    purpose: str
    legal_basis: LegalBasis
    legal_basis_text: str | None = None


class KeepBy(_Strict):
    """Durations chosen by a field of the clock event's data (per distributor)."""

    field: str
    # Checked one by one, so an error points at the distributor's own line.
    durations: dict[str, Annotated[Duration, BeforeValidator(_duration)]] = Field(
        default_factory=dict
    )

    @field_validator("durations", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("durations")
    @classmethod
    def _distinct(cls, value: dict[str, Duration]) -> dict[str, Duration]:
        seen: dict[str, str] = {}
        for name in value:
            if (key := _name_key(name)) in seen:
                raise ValueError(f"{seen[key]!r} and {name!r} name the same {key!r}")
            seen[key] = name
        return value

    def duration_for(self, chosen: Any) -> Duration | None:
        """The duration for this field value, matched as the shop may spell it
        (`dist-nord` is `DIST-NORD`): a near miss must not fall back to the default."""
        wanted = _name_key(str(chosen))
        return next((d for name, d in self.durations.items() if _name_key(name) == wanted), None)


def _name_key(name: str) -> str:
    return name.strip().casefold()


class Consent(_Strict):
    """Retention that only consent allows (recruitment: CNIL, 2 years on consent).

    Without consent, `otherwise_ends_on` events end retention at once; with it,
    they only restart the clock.
    """

    given_by: list[str] = Field(default_factory=list)
    flag: str | None = None
    otherwise_ends_on: list[str] = Field(default_factory=list)


class ColumnSpec(_Strict):
    """A column's strategy written as a mapping: `{constant: Anonymous}`, or
    `{strategy: redact, pattern: '^[^0-9]*$'}` (the shop application's own rule)."""

    strategy: str | None = None
    constant: str | None = None
    pattern: str | None = None

    @model_validator(mode="after")
    def _one_strategy(self) -> ColumnSpec:
        if self.constant is not None and self.strategy not in (None, "constant"):
            raise ValueError(
                f"give either constant or strategy ({self.strategy!r}), not both: "
                "{constant: Anonymous} writes that value"
            )
        if self.constant is None and self.strategy in (None, "constant"):
            raise ValueError(
                "no strategy: write {constant: VALUE}, or {strategy: NAME} (null, redact, "
                "random, random_email, year, department, amount_range, ...)"
            )
        return self

    @property
    def name(self) -> str:
        if self.constant is not None:
            return "constant"
        return self.strategy or "null"


def _spec(value: Any) -> Any:
    """A strategy written by name (`email: random_email`) is the mapping's short form."""
    if value is None:
        return {"strategy": "null"}
    return {"strategy": value} if isinstance(value, str) else value


class Target(_Strict):
    """Where a rule's data lives in the shop database, and what a sweep does to it.

    `key` is the column that names the subject: its value is the subject's id
    (`customer:42` -> 42) or, with `key_value: subject`, the whole `KIND:ID`.
    `kinds` limits the target to some of the activity's subject kinds.
    `columns` maps each column to a strategy (worker/domain/strategies.py), by name
    or as a mapping (ColumnSpec: a constant, a pattern its values must match);
    `delete_rows` removes the subject's rows instead; `suppress` keeps a keyed
    hash of those columns in the suppression list first; `keeps` names the
    columns a legal duty keeps, and `note` says which duty; `quasi` names kept
    columns that are quasi-identifiers (`lethe anonymity` groups rows by them).
    """

    table: str
    key: str
    key_value: Literal["id", "subject"] = "id"
    kinds: list[str] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    delete_rows: bool = False
    suppress: list[str] = Field(default_factory=list)
    keeps: list[str] = Field(default_factory=list)
    quasi: list[str] = Field(default_factory=list)
    note: str | None = None

    @field_validator("columns", mode="before")
    @classmethod
    def _null_is_a_strategy(cls, value: Any) -> Any:
        # `email: null` in YAML reads as None: the DPO meant the `null` strategy.
        if isinstance(value, dict):
            return {str(k): _spec(v) for k, v in value.items()}
        return value

    @cached_property
    def strategies(self) -> dict[str, str]:
        """Each column's strategy name (`constant` for `{constant: ...}`)."""
        return {c: s.name for c, s in self.columns.items()}

    @cached_property
    def constants(self) -> dict[str, str]:
        """The value each `{constant: VALUE}` column gets."""
        return {c: s.constant for c, s in self.columns.items() if s.constant is not None}

    @cached_property
    def patterns(self) -> dict[str, str]:
        """The shop application's own rule for a column's values (`pattern:`)."""
        return {c: s.pattern for c, s in self.columns.items() if s.pattern is not None}

    @property
    def name(self) -> str:
        """How the audit names it: the table, and the kinds when only some apply."""
        return f"{self.table}[{','.join(self.kinds)}]" if self.kinds else self.table

    def applies_to(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds


# A value a rule entry's `when` compares with: JSON's scalars, as event data carries them.
Scalar = bool | int | float | str


class Entry(_Strict):
    """A rule entry: an event type, and the data values the event must carry (all equal).

    Written `contact.made`, or `{type: contact.made, when: {direction: inbound}}` when only
    some events of the type count (CNIL: only the person's own contact renews a prospect).
    """

    type: str
    when: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        # One message per broken entry, not one per field or per member of Scalar.
        if not isinstance(value, dict):
            raise ValueError(f"an entry cannot be {_yaml_kind(value)}")
        unknown = sorted(str(k) for k in value if k not in ("type", "when"))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} in an entry (check its spelling)")
        if not isinstance(value.get("type"), str):
            raise ValueError("the entry's type is missing or not an event type name")
        when = value.get("when", {})
        if not isinstance(when, dict):
            raise ValueError(f"when cannot be {_yaml_kind(when)}")
        for name, wanted in when.items():
            if not isinstance(name, str) or not isinstance(wanted, Scalar):
                raise ValueError(
                    f"when {name}: {_yaml_kind(wanted)} is no value to compare a data field with"
                    if isinstance(name, str)
                    else "when names data fields by name"
                )
        return value

    def matches(self, event_type: str, data: Mapping[str, Any]) -> bool:
        if event_type != self.type:
            return False
        # `type(...) is` too: True == 1 in Python, yet `keep: true` is not `keep: 1`
        return all(
            name in data and data[name] == value and type(data[name]) is type(value)
            for name, value in self.when.items()
        )

    def __str__(self) -> str:
        if not self.when:
            return self.type
        return f"{self.type}({', '.join(f'{k}={v}' for k, v in self.when.items())})"


def _entries(value: Any) -> Any:
    if isinstance(value, list):
        return [{"type": item} if isinstance(item, str) else item for item in value]
    return value


def _yaml_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "empty" if value is None else f"a single value ({type(value).__name__})"


Entries = Annotated[list[Entry], BeforeValidator(_entries)]


def matching(entries: Iterable[Entry], event_type: str, data: Mapping[str, Any]) -> bool:
    """Whether an event of `event_type` carrying `data` matches one of `entries`."""
    return any(entry.matches(event_type, data) for entry in entries)


@dataclass(frozen=True)
class Matcher:
    """A list of entries made quick to ask: a set lookup for the plain types, the data
    compared only for entries with a `when` (the arithmetic asks this for every event)."""

    types: frozenset[str]
    filtered: tuple[Entry, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[Entry], also: Iterable[str] = ()) -> Matcher:
        entries = list(entries)
        plain = {e.type for e in entries if not e.when} | set(also)
        return cls(frozenset(plain), tuple(e for e in entries if e.when))

    def __call__(self, event_type: str, data: Mapping[str, Any]) -> bool:
        if event_type in self.types:
            return True
        return any(entry.matches(event_type, data) for entry in self.filtered)


class Rule(_Strict):
    clock: Entries = Field(default_factory=list)
    opens_on: Entries = Field(default_factory=list)
    ends_on: Entries = Field(default_factory=list)
    # After an end and before its erasure, which clock events reopen the lifecycle:
    # absent, any of them; `[]`, none (once erased, later events start a new one).
    reopens_on: Entries | None = None
    keep: Duration
    keep_by: KeepBy | None = None
    consent: Consent | None = None
    then: Literal["anonymise", "pseudonymise", "delete", "archive"]
    source: str
    targets: list[Target] = Field(default_factory=list)

    @field_validator("keep", mode="before")
    @classmethod
    def _parse_keep(cls, value: Any) -> Duration:
        return _duration(value)

    @cached_property
    def summary(self) -> str:
        """How the audit names this rule: what it does, how long, after which events."""
        clock = "|".join(map(str, self.clock or self.opens_on))
        return f"{self.then} {self.keep} after {clock}"

    @cached_property
    def matchers(self) -> dict[str, Matcher | None]:
        """clock, opens_on, ends_on and reopens_on as matchers (reopens_on None when absent);
        `ends_without_consent` adds the consent's otherwise_ends_on to ends_on."""
        otherwise = self.consent.otherwise_ends_on if self.consent else []
        return {
            "clock": Matcher.of(self.clock),
            "opens_on": Matcher.of(self.opens_on),
            "ends_on": Matcher.of(self.ends_on),
            "ends_without_consent": Matcher.of(self.ends_on, otherwise),
            "reopens_on": None if self.reopens_on is None else Matcher.of(self.reopens_on),
        }

    @cached_property
    def event_types(self) -> frozenset[str]:
        """Every event type that touches this rule (creates or moves a lifecycle)."""
        types = {e.type for e in (*self.clock, *self.opens_on, *self.ends_on)}
        if self.consent:
            types |= set(self.consent.given_by) | set(self.consent.otherwise_ends_on)
        return frozenset(types)


class Activity(_Strict):
    id: str
    name: str
    section: str | None = None
    role: Literal["controller", "processor"]
    controller: str
    subjects: list[str] = Field(min_length=1)
    data: list[str] = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1)
    retention: list[Rule]
    recipients: list[str] = Field(default_factory=list)

    @cached_property
    def event_types(self) -> frozenset[str]:
        return frozenset().union(*(rule.event_types for rule in self.retention))

    @cached_property
    def ending_events(self) -> frozenset[str]:
        """Events that end this activity's lifecycle before its clock runs out."""
        ends: set[str] = set()
        for rule in self.retention:
            ends |= {e.type for e in rule.ends_on}
            if rule.consent:
                ends |= set(rule.consent.otherwise_ends_on)
        return frozenset(ends)

    def touched_by(self, event_type: str, kind: str) -> bool:
        return kind in self.subjects and event_type in self.event_types


class Holds(_Strict):
    place: list[str] = Field(default_factory=list)
    lift: list[str] = Field(default_factory=list)
    # The event data field naming the case (two disputes at once): a lift with a case
    # ends that case only; one without ends every case opened before it.
    case: str | None = None


class Organisation(_Strict):
    name: str
    address: str | None = None
    contact: str | None = None
    dpo: str | None = None


class Register(_Strict):
    name: str
    controller: Organisation
    timezone: str = "Europe/Paris"
    subject_kinds: list[str] = Field(min_length=1)
    events: dict[str, str] = Field(min_length=1)
    holds: Holds = Holds()
    activities: list[Activity]
    # where the shop's existing rows tell events (backfill: worker/domain/sources.py)
    sources: list[Source] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            pendulum.timezone(value)
        except Exception:
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)"
            ) from None
        return value

    @cached_property
    def tz(self) -> pendulum.Timezone:
        # Made once: pendulum.timezone() reads the zone file again (about 40 µs) whenever
        # no object of that zone is left alive, as between two batches can happen.
        return pendulum.timezone(self.timezone)

    def activity(self, activity_id: str) -> Activity:
        for activity in self.activities:
            if activity.id == activity_id:
                return activity
        raise KeyError(activity_id)

    def activities_touched(self, event_type: str, kind: str) -> list[Activity]:
        return self._touch_index.get((event_type, kind), [])

    @cached_property
    def _touch_index(self) -> dict[tuple[str, str], list[Activity]]:
        # asked for every event ingested: a lookup, not a scan of every rule
        index: dict[tuple[str, str], list[Activity]] = {}
        for activity in self.activities:
            for event_type in activity.event_types:
                for kind in activity.subjects:
                    index.setdefault((event_type, kind), []).append(activity)
        return index

    def touches(self) -> list[tuple[str, str, str]]:
        """Every (event type, subject kind, activity id) an event of that type and kind
        touches, in a stable order."""
        return [
            (event_type, kind, activity.id)
            for (event_type, kind), activities in sorted(self._touch_index.items())
            for activity in activities
        ]

    def is_hold_event(self, event_type: str) -> bool:
        return event_type in self.holds.place or event_type in self.holds.lift
