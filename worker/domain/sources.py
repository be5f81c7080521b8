"""Sources: where the shop's existing rows say an event happened, and how a row becomes one.

Pure: the register's `sources:` entries, their templates (`customer:{id_customer}`),
their checks without the shop, and how a shop's `at` value is read as an instant
(naive DATETIMEs in the register's zone, zero dates and NULLs skipped). Reading the
rows is worker/shop/sources.py; sending them is worker/pipeline/backfill.py.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


class Source(BaseModel):
    """One `sources:` entry: `event` read from each row of `table` (or of a `query`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str
    table: str | None = None
    query: str | None = None
    subject: str
    at: str
    id: str
    where: str | None = None
    data: dict[str, str] = Field(default_factory=dict)

    @field_validator("data", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        # `direction: inbound` and `shop: "{id_shop}"` alike: YAML may give numbers
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value

    @property
    def origin(self) -> str:
        """How messages name it: its table, or `query` (never the query's text)."""
        return self.table or "query"

    def templates(self) -> Iterator[tuple[tuple, str]]:
        """(where in the entry, template) for every text filled from a row."""
        yield ("subject",), self.subject
        yield ("id",), self.id
        for name, template in self.data.items():
            yield ("data", name), template

    def columns(self) -> list[str]:
        """Every column a row must return: the placeholders and `at`, in a stable order."""
        names = [self.at]
        for _, template in self.templates():
            for name in placeholders(template):
                if name not in names:
                    names.append(name)
        return names


class TemplateError(ValueError):
    """A template that cannot be filled (an unclosed brace, a format spec)."""


def placeholders(template: str) -> list[str]:
    """The column names a template's `{...}` fields name; raises TemplateError."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{exc} (a literal brace is written {{{{ or }}}})") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion or not _IDENTIFIER.fullmatch(field):
            raise TemplateError(
                f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                " is not a column name: write {column}, nothing else between the braces"
            )
        names.append(field)
    return names


def fill(template: str, row: Mapping[str, Any]) -> str:
    """The template with each `{column}` replaced by the row's value as text."""
    return "".join(
        text if field is None else text + _text(row[field]) for text, field in _parsed(template)
    )


@lru_cache(maxsize=256)
def _parsed(template: str) -> tuple[tuple[str, str | None], ...]:
    # parsed once per template, not once per row: a backfill fills millions
    return tuple((text, field) for text, field, _, _ in string.Formatter().parse(template))


def _text(value: Any) -> str:
    if isinstance(value, str):
        # CHAR(n) columns come back blank-padded on PostgreSQL: the id is without them
        return value.rstrip(" ")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def source_problems(
    source: Source,
    event_types: set[str],
    kinds: list[str],
    touching: set[tuple[str, str]] | None,
) -> Iterator[tuple[tuple, str]]:
    """What is wrong with a source without the shop: (where in the entry, message).

    `touching` holds the (event type, subject kind) pairs some activity's rule uses,
    so a source whose events would touch no lifecycle is refused before a backfill
    sends a million of them for nothing (None: not checked).
    """
    label = f"source {source.event!r} from {source.origin!r}"
    if source.event not in event_types:
        yield (
            ("event",),
            f"{label}: unknown event type {source.event!r}: declare it under 'events' or fix "
            f"the name (known: {', '.join(sorted(event_types))})",
        )
    if (source.table is None) == (source.query is None):
        yield (
            (),
            f"{label}: give either table: (one table, read by its primary key) or query: "
            "(a SELECT, read in `at` order), not both nor neither",
        )
    if source.table is not None and not _IDENTIFIER.fullmatch(source.table):
        yield (("table",), f"{label}: {source.table!r} is not a table name: use query: for SQL")
    if source.query is not None and not re.match(r"\s*(select|with)\b", source.query, re.I):
        yield (("query",), f"{label}: query must be one SELECT (or WITH ... SELECT) statement")
    if source.query is not None and ";" in source.query.strip().rstrip(";"):
        yield (("query",), f"{label}: query holds more than one statement: keep to one SELECT")
    if not _IDENTIFIER.fullmatch(source.at):
        yield (("at",), f"{label}: at names the column holding the event's instant, not SQL")
    for where, template in source.templates():
        try:
            names = placeholders(template)
        except TemplateError as exc:
            yield where, f"{label}: {'.'.join(where)}: {exc}"
            continue
        if where == ("id",) and not names:
            yield (
                where,
                f"{label}: id {template!r} names no column, so every row would be the same "
                "event: put the row's key in it (order-{id_order}-closed)",
            )
    yield from _subject_problems(source, label, kinds, touching)
    if source.query is not None:
        returned = select_names(source.query)
        if returned is not None:
            for where, template in source.templates():
                for name in _safe_placeholders(template):
                    if name.casefold() not in returned:
                        yield (
                            where,
                            f"{label}: {{{name}}} is not a column the query returns "
                            f"(it returns {', '.join(sorted(returned))})",
                        )
            if source.at.casefold() not in returned:
                yield (("at",), f"{label}: at {source.at!r} is not a column the query returns")


def _subject_problems(
    source: Source, label: str, kinds: list[str], touching: set[tuple[str, str]] | None
) -> Iterator[tuple[tuple, str]]:
    kind, sep, rest = source.subject.partition(":")
    if source.subject.startswith("{") and not sep:
        # the whole subject from one column that holds KIND:ID (navigation logs do):
        # each row's is checked as it is read, a bad one refused and counted
        return
    if not sep or not rest or not _safe_placeholders(rest):
        yield (
            ("subject",),
            f"{label}: subject must be KIND:{{column}} (customer:{{id_customer}}), or "
            "{column} for a column that holds KIND:ID",
        )
        return
    if kind not in kinds:
        yield (
            ("subject",),
            f"{label}: unknown subject kind {kind!r} (declared kinds: {', '.join(kinds)})",
        )
    elif touching is not None and (source.event, kind) not in touching:
        yield (
            ("event",),
            f"{label}: no activity's rule uses {source.event!r} about a {kind}: its events "
            "would start no lifecycle; fix the event or the kind",
        )


def _safe_placeholders(template: str) -> list[str]:
    try:
        return placeholders(template)
    except TemplateError:
        return []


def select_names(query: str) -> set[str] | None:
    """The (casefolded) names a simple SELECT returns, or None when they cannot be told
    without the database (`*`, a function without an alias...): `lethe shop check` then
    prepares the query and reads them."""
    match = re.match(r"\s*select\s+(?:distinct\s+)?(.*?)\s+from\s", query, re.I | re.S)
    if not match or re.match(r"\s*with\b", query, re.I):
        return None
    names = set()
    for item in _split_top_level(match.group(1)):
        item = item.strip()
        alias = re.search(r"\s+as\s+[`\"]?([A-Za-z_][A-Za-z0-9_$]*)[`\"]?\s*$", item, re.I)
        if alias:
            names.add(alias.group(1).casefold())
            continue
        plain = re.fullmatch(r"(?:[`\"]?\w+[`\"]?\.)?[`\"]?([A-Za-z_][A-Za-z0-9_$]*)[`\"]?", item)
        if not plain:
            return None
        names.add(plain.group(1).casefold())
    return names


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


# ---- the `at` column's value as an instant ----


@dataclass(frozen=True)
class Skipped:
    """Why a row gave no event: its `at` is NULL, a zero date, or text that is no date."""

    reason: str  # null | zero_date | unreadable


def instant_of(value: Any, zone: str) -> datetime | Skipped:
    """The instant a row's `at` value means, as an aware UTC datetime.

    A naive DATETIME (MySQL/MariaDB, PostgreSQL's `timestamp without time zone`,
    SQLite's text) is a wall-clock reading in the register's zone. Twice a year that
    reading is not one instant: in Europe/Paris 2026-03-29 02:30 never happened (the
    clocks went from 02:00 to 03:00) and 2026-10-25 02:30 happened twice. Lethe takes
    the LATER of the instants it can mean (both are 01:30 UTC there): an anchor read an
    hour late moves a deadline an hour later, never earlier, so no one is erased before
    the register's time (art. 5(1)(e) both ways, but early erasure cannot be undone).
    A DATE is midnight in the zone. Zero dates (`0000-00-00`, which MySQL stores in
    place of "unknown") and NULL are never dates: the row is skipped and counted.
    """
    if value is None:
        return Skipped("null")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return Skipped("null")
        if _ZERO_DATE.match(text):
            return Skipped("zero_date")
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return Skipped("unreadable")
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return value.astimezone(UTC)
        return _latest_reading(value, ZoneInfo(zone))
    if isinstance(value, date):
        return _latest_reading(datetime.combine(value, time()), ZoneInfo(zone))
    return Skipped("unreadable")


# MySQL's zero date, and its dates with a zero month or day (NO_ZERO_IN_DATE off), which
# PyMySQL hands over as text: no calendar has them
_ZERO_DATE = re.compile(r"(0000-\d\d-\d\d|\d{4}-00-\d\d|\d{4}-\d\d-00)")


def _latest_reading(wall: datetime, zone: ZoneInfo) -> datetime:
    first = wall.replace(tzinfo=zone)
    second = first.replace(fold=1)
    if first.utcoffset() == second.utcoffset():  # every hour but one or two a year
        return first.astimezone(UTC)
    return max(first.astimezone(UTC), second.astimezone(UTC))
