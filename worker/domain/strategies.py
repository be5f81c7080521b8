"""Anonymisation strategies: plain functions registered by name, and what each column needs.

Pure: no database. A strategy takes a value and the context (the subject, the
key, the column's facts) and returns the value to store. Every strategy is
idempotent (applying it to its own output changes nothing), so a sweep
interrupted between the shop's commit and the audit row can simply run again;
`random` is the one exception, and harmlessly so: it draws a new random value
for a row it already erased, which is no more linkable than the one it replaces
(`random_email` recognises its own `@erased.invalid` output and leaves it).

Unlinkable strategies (UNLINKABLE) write nothing computed from the person: a
constant, a random value, or a coarser version of the value (a year, a
département, an amount range). keyed_hash and pseudonym are linkable: whoever
holds the key recomputes them from a known e-mail or customer id, which is
pseudonymisation (GDPR art. 4(5); EDPB Guidelines 01/2025), so the register
allows them only under `then: pseudonymise` (worker/domain/register_file.py).

Adding a strategy is one function and one line in STRATEGIES.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from worker.domain.hashing import PSEUDONYMS, purpose_key
from worker.domain.register import Target

REDACTED = "[redacted]"
HASH_PREFIX = "h:"
# what keyed_hash writes, so that it leaves its own output alone (shared with SQL)
HASH_PATTERN = HASH_PREFIX + "[0-9a-f]+"
PSEUDONYM_PREFIX = "anon-"
# The smallest hash we write: 16 hex digits, so two addresses of one shop never collide
# in practice and a UNIQUE column stays unique.
MIN_HASH_HEX = 16
MIN_PSEUDONYM_HEX = 8
PSEUDONYM_HEX = 12
# random_email's domain: .invalid is reserved (RFC 2606, RFC 6761), so no mail ever leaves
ERASED_DOMAIN = "@erased.invalid"
# random's text alphabet: letters only, so a name column's own rule (PrestaShop's
# isCustomerName refuses digits) accepts it; 16 letters for 64 bits (shared with SQL)
RANDOM_ALPHABET = "abcdefghijklmnop"
RANDOM_LETTERS = 32
# The fewest random letters in a UNIQUE column: 12 (48 bits), two of 20 million rows
# share one by even odds, as a 12-digit pseudonym
MIN_UNIQUE_RANDOM = 12


@dataclass(frozen=True)
class ColumnFacts:
    """What the shop schema says about a column (read by reflection in worker/shop/binding.py)."""

    name: str
    kind: str  # text | integer | numeric | date | datetime | other
    length: int | None = None
    nullable: bool = True
    unique: bool = False
    primary_key: bool = False
    foreign_key: bool = False
    padded: bool = False  # CHAR(n): values come back blank-padded to the length
    integer_bits: int | None = None  # 16, 32 or 64 for an integer column
    # A timestamp with time zone: the zone its years begin in (the register's). A shop's
    # 1 January 00:30 in Paris is still the last year in UTC, its database's usual zone.
    zone: str | None = None
    # UNIQUE on the column's first N characters only (MySQL's `UNIQUE KEY (email(20))`)
    unique_prefix: int | None = None


@dataclass(frozen=True)
class Context:
    secret: bytes  # LETHE_SECRET; linkable strategies derive their own key from it
    subject: str
    column: ColumnFacts
    constant: Any = None  # what `{constant: VALUE}` writes


Strategy = Callable[[Any, Context], Any]


def null(value: Any, ctx: Context) -> Any:
    return None


def redact(value: Any, ctx: Context) -> Any:
    return None if value is None else REDACTED


def constant(value: Any, ctx: Context) -> Any:
    """The register's fixed value for every row (`first_name: {constant: Anonymous}`)."""
    return None if value is None else ctx.constant


def random(value: Any, ctx: Context) -> Any:
    """A random value of the column's type, drawn by `secrets`: nothing of the person."""
    if value is None:
        return None
    if ctx.column.kind == "integer":
        # positive and within the column's width, so any signed integer column holds it
        return secrets.randbelow(2 ** ((ctx.column.integer_bits or 32) - 1) - 1) + 1
    return random_letters(random_length(ctx.column))


def random_letters(length: int) -> str:
    return "".join(secrets.choice(RANDOM_ALPHABET) for _ in range(length))


def random_length(column: ColumnFacts) -> int:
    """How many letters `random` writes: 32, or what the column holds."""
    return _room(column, 0, RANDOM_LETTERS)


def random_email(value: Any, ctx: Context) -> Any:
    """`<random letters>@erased.invalid`: still an address (UNIQUE, NOT NULL, the shop's
    own e-mail check accept it), no one's, and never deliverable."""
    if value is None or is_erased_email(value):
        return value
    return random_letters(random_email_length(ctx.column)) + ERASED_DOMAIN


def random_email_length(column: ColumnFacts) -> int:
    """How many random letters come before `@erased.invalid`: 32, or what the column holds."""
    return _room(column, len(ERASED_DOMAIN), RANDOM_LETTERS)


def is_erased_email(value: Any) -> bool:
    return isinstance(value, str) and value.endswith(ERASED_DOMAIN)


def keyed_hash(value: Any, ctx: Context) -> Any:
    """HMAC-SHA256 of the value: rows stay distinct and joinable, not readable.

    In a UNIQUE column the subject is hashed with the value: an address erased from one
    customer's row may come back in another's, and the same hash twice would break the
    constraint on every sweep, so that person would never be erased.
    """
    if value is None or _is_hash(value):
        return value
    message = hashed_message(str(value), ctx.subject if ctx.column.unique else None)
    digest = hmac.digest(purpose_key(ctx.secret, PSEUDONYMS), message.encode(), "sha256").hex()
    return HASH_PREFIX + digest[: hash_digits(ctx.column)]


def hashed_message(value: str, subject: str | None) -> str:
    """What keyed_hash feeds the HMAC; the subject's length first keeps the split certain."""
    return value if subject is None else f"{len(subject)}:{subject}{value}"


def pseudonym(value: Any, ctx: Context) -> Any:
    """The same pseudonym for a subject wherever it appears, so counts per person survive."""
    if value is None:
        return None
    key = purpose_key(ctx.secret, PSEUDONYMS)
    digest = hmac.new(key, b"pseudonym:" + ctx.subject.encode(), hashlib.sha256)
    return PSEUDONYM_PREFIX + digest.hexdigest()[: pseudonym_digits(ctx.column)]


def year(value: Any, ctx: Context) -> Any:
    """A date becomes the first of January of its year."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None and ctx.column.zone:
            value = value.astimezone(ZoneInfo(ctx.column.zone))
        return value.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    if isinstance(value, date):
        return value.replace(month=1, day=1)
    raise StrategyError(f"year expects a date, got {type(value).__name__}")


# Whole-value patterns, shared with the SQL forms (worker/shop/sql_strategies.py).
POSTCODE_PATTERN = "[0-9]{5}"
DEPARTMENT_PATTERN = "[0-9]{2,3}|2[AB]"
_FR_POSTCODE = re.compile(POSTCODE_PATTERN)
_DEPARTMENT = re.compile(DEPARTMENT_PATTERN)
# ASCII only, as PostgreSQL's btrim, and its upper() under the "C" collation, do
# (worker/shop/sql_strategies.py): the same postcode gives the same département in
# Python and in SQL.
WHITESPACE = " \t\n\r\x0b\x0c"
_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def department(value: Any, ctx: Context) -> Any:
    """A French postcode becomes its département (75008 -> 75, 20090 -> 2A, 97110 -> 971)."""
    if value is None:
        return None
    text = str(value).strip(WHITESPACE).translate(_UPPER)
    if _FR_POSTCODE.fullmatch(text):
        if text.startswith("97") or text.startswith("98"):
            return text[:3]
        if text.startswith("20"):
            # Corsica: 200xx and 201xx are Corse-du-Sud, the rest Haute-Corse.
            return "2A" if int(text[:3]) < 202 else "2B"
        return text[:2]
    if _DEPARTMENT.fullmatch(text):
        return text
    # Outside France: the first two characters name a region at most (UK "SW", ...).
    return text[:2].strip(WHITESPACE)


AMOUNT_BOUNDS = (0, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000)


def amount_range(value: Any, ctx: Context) -> Any:
    """An amount becomes the lower bound of its range (0-50, 50-100, 100-250 ...).

    In a text column the range itself is written ("100-250").
    """
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"-?\d+-(\d+|)", value):
        return value
    try:
        amount = Decimal(value)
    except (ArithmeticError, ValueError, TypeError):
        # "12,50" or "€12" in a text column: this row fails, audited, the others go on
        raise StrategyError(
            f"amount_range expects an amount, got a {type(value).__name__} it cannot read"
        ) from None
    if amount.is_nan():
        # numeric and real columns hold NaN: no amount to tell, and raising would fail the
        # person at every sweep; infinities fall in the widest range, as any large amount
        return value
    low, high = _bucket(amount)
    if ctx.column.kind == "text":
        return f"{low}-{high if high is not None else ''}"
    if ctx.column.kind == "integer":
        return low
    return Decimal(low)


def _bucket(amount: Decimal) -> tuple[int, int | None]:
    if amount < 0:
        return (-_bucket(-amount)[0], 0)
    low = 0
    for bound in AMOUNT_BOUNDS:
        if amount >= bound:
            low = bound
        else:
            return (low, bound)
    return (low, None)


STRATEGIES: dict[str, Strategy] = {
    "null": null,
    "redact": redact,
    "constant": constant,
    "random": random,
    "random_email": random_email,
    "keyed_hash": keyed_hash,
    "pseudonym": pseudonym,
    "year": year,
    "department": department,
    "amount_range": amount_range,
}

# Which column kinds each strategy can write into.
ACCEPTS: dict[str, frozenset[str]] = {
    "null": frozenset({"text", "integer", "numeric", "date", "datetime", "other"}),
    "redact": frozenset({"text"}),
    "constant": frozenset({"text"}),
    "random": frozenset({"text", "integer"}),
    "random_email": frozenset({"text"}),
    "keyed_hash": frozenset({"text"}),
    "pseudonym": frozenset({"text"}),
    "year": frozenset({"date", "datetime"}),
    "department": frozenset({"text"}),
    "amount_range": frozenset({"integer", "numeric", "text"}),
}

# Shortest column each strategy's output fits in (text columns with a length).
MIN_LENGTH: dict[str, int] = {
    "redact": len(REDACTED),
    "random_email": MIN_UNIQUE_RANDOM + len(ERASED_DOMAIN),
    "keyed_hash": len(HASH_PREFIX) + MIN_HASH_HEX,
    "pseudonym": len(PSEUDONYM_PREFIX) + MIN_PSEUDONYM_HEX,
    "department": 3,
    # the widest range written in a text column, "50000-100000"
    "amount_range": max(len(f"{low}-{high}") for low, high in pairwise(AMOUNT_BOUNDS)),
}

# Strategies whose output is the same for many values: never into a UNIQUE column.
NOT_INJECTIVE = frozenset({"redact", "constant", "year", "department", "amount_range"})

# Whoever holds the key recomputes these from the person's e-mail or id: pseudonymisation.
LINKABLE = frozenset({"keyed_hash", "pseudonym"})
UNLINKABLE = frozenset(STRATEGIES) - LINKABLE
# What the strategies keep of the value, coarser: quasi-identifiers (`lethe anonymity`).
GENERALISING = frozenset({"year", "department", "amount_range"})


class StrategyError(ValueError):
    """A strategy met a value it cannot handle (the schema check should have said so)."""


def apply(name: str, value: Any, ctx: Context) -> Any:
    """The value `name` writes in place of `value`."""
    if ctx.column.padded and isinstance(value, str):
        # PostgreSQL's CHAR(n) comes back blank-padded, but the blanks are no part of the
        # value (its text casts drop them, SQLite never adds them): one value, one hash
        value = value.rstrip(" ")
    if ctx.column.kind in ("date", "datetime") and isinstance(value, str):
        zero = _ZERO_IN_DATE.fullmatch(value)
        if zero is not None:
            return _zero_date(name, value, zero["year"], ctx)
    return STRATEGIES[name](value, ctx)


# MySQL's "zero" dates, which a permissive sql_mode lets a shop store (PrestaShop writes
# 0000-00-00 00:00:00 for "no invoice yet") and pymysql returns as text, not as a date:
# all zero, or a known year with an unknown month or day (1985-00-00).
_ZERO_IN_DATE = re.compile(
    r"(?P<year>[0-9]{4})-(?:00-[0-9]{2}|[0-9]{2}-00)(?: [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)?"
)


def _zero_date(name: str, value: str, year_digits: str, ctx: Context) -> Any:
    """A zero date is no date: `null` empties it and the other strategies leave it as it
    is (it holds nothing to generalise), except that `year` keeps the year of a partial
    one and drops its month: `1985-06-00` becomes 1 January 1985."""
    if name == "null":
        return None
    if name != "year" or year_digits == "0000":
        return value
    first = date(int(year_digits), 1, 1)
    return first if ctx.column.kind == "date" else datetime(first.year, 1, 1)


def column_problem(
    name: str, column: ColumnFacts, one_row_per_subject: bool, constant: Any = None
) -> str | None:
    """Why `name` cannot be used on `column`, and what can, or None when every output fits
    its constraints.

    Checked before a sweep touches anything, so an anonymised row never fails a
    constraint, is rolled back and comes back at every sweep.
    """
    long = column.length is not None and constant is not None
    if name == "constant" and long and len(str(constant)) > (column.length or 0):
        return (
            f"column {column.name!r} holds {column.length} characters and the constant "
            f"has {len(str(constant))}: choose a shorter one"
        )
    why = _unfit(name, column, one_row_per_subject)
    if why is None or name not in STRATEGIES or column.primary_key:
        return why
    # the remedy is what fits this column: a NOT NULL date takes year, not redact
    # and unlinkable, unless the register asked for a linkable one (then: pseudonymise)
    offered = STRATEGIES if name in LINKABLE else UNLINKABLE
    fitting = [
        s
        for s in STRATEGIES
        if s in offered and s != name and not _unfit(s, column, one_row_per_subject)
    ]
    if not fitting:
        return (
            f"{why}: no strategy fits this column; leave it out, or delete the rows "
            "(delete_rows: true)"
        )
    return f"{why}: use {_either(fitting)} instead"


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _unfit(name: str, column: ColumnFacts, one_row_per_subject: bool) -> str | None:
    if name not in STRATEGIES:
        return f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})"
    where = f"column {column.name!r}"
    if column.primary_key:
        return f"{where} is the primary key: other rows point at it, keep it"
    if column.foreign_key and name != "null":
        return f"{where} is a foreign key, which only null can unlink"
    if column.kind not in ACCEPTS[name]:
        kinds = _either(sorted(ACCEPTS[name]))
        return f"{where} is of type {column.kind} and {name} needs a {kinds} column"
    if name == "null" and not column.nullable:
        return f"{where} is NOT NULL"
    if column.unique and name in NOT_INJECTIVE:
        return f"{where} is UNIQUE and {name} gives many rows the same value"
    if column.unique and name == "pseudonym" and not one_row_per_subject:
        return (
            f"{where} is UNIQUE and a subject may have several rows here, which would all "
            "get the same pseudonym"
        )
    if column.unique and name == "pseudonym" and pseudonym_digits(column) < PSEUDONYM_HEX:
        # 8 hex digits: two of 77,000 people share one by even odds; 12: of 20 million
        return (
            f"{where} is UNIQUE and holds {column.length} characters: a pseudonym cut to fit "
            "would soon be the same for two people (widen it to "
            f"{len(PSEUDONYM_PREFIX) + PSEUDONYM_HEX} characters)"
        )
    if column.unique and name in ("random", "random_email") and not _random_is_unique(column):
        return (
            f"{where} is UNIQUE and too narrow for random values to stay distinct "
            f"(widen it to {MIN_UNIQUE_RANDOM} characters, or a 64-bit integer)"
        )
    needed = MIN_LENGTH.get(name)
    if column.kind == "text" and column.length is not None and needed and column.length < needed:
        return f"{where} holds {column.length} characters, {name} writes {needed}"
    prefix = column.unique_prefix
    if name in ("keyed_hash", "pseudonym") and prefix is not None and needed and prefix < needed:
        return (
            f"{where} is UNIQUE on its first {prefix} characters only, and {name} needs "
            f"{needed} to stay unique (widen the index's prefix)"
        )
    return None


def _random_is_unique(column: ColumnFacts) -> bool:
    # 31 random bits: two of 55,000 rows share one by even odds; 63: of 3 billion
    if column.kind == "integer":
        return (column.integer_bits or 32) >= 64
    # a MySQL prefix index (`UNIQUE (email(10))`) compares only its first characters, and
    # random_email's random letters come first
    letters = random_length(column) if column.kind == "text" else MIN_UNIQUE_RANDOM
    if column.unique_prefix is not None:
        letters = min(letters, column.unique_prefix)
    return letters >= MIN_UNIQUE_RANDOM


def hash_digits(column: ColumnFacts) -> int:
    """How many hex digits of the HMAC keyed_hash writes: 64, or what the column holds."""
    return _room(column, len(HASH_PREFIX), 64)


def pseudonym_digits(column: ColumnFacts) -> int:
    """How many hex digits a pseudonym has: 12, or what the column holds."""
    return _room(column, len(PSEUDONYM_PREFIX), PSEUDONYM_HEX)


def _room(column: ColumnFacts, prefix: int, wanted: int) -> int:
    # a unique prefix index compares only its first characters: the digits must fit in it
    limits = [n for n in (column.length, column.unique_prefix) if n is not None]
    if not limits:
        return wanted
    return max(1, min(wanted, min(limits) - prefix))


def is_anonymised(value: Any) -> bool:
    """A value a strategy wrote (a keyed hash, the redaction token, an erased address), not
    an original."""
    return value == REDACTED or _is_hash(value) or is_erased_email(value)


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(HASH_PATTERN, value) is not None


def strategy_text(target: Target) -> tuple[str, str]:
    """(columns, strategy) as the audit row writes them."""
    if target.delete_rows:
        suppressed = f"; suppression list: {','.join(target.suppress)}" if target.suppress else ""
        return "*", f"delete_rows{suppressed}"
    columns = ",".join(target.columns)
    return columns, ",".join(f"{c}:{s}" for c, s in target.strategies.items())
