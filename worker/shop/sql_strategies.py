"""The anonymisation strategies as PostgreSQL expressions, for set-based sweeps.

worker/domain/strategies.py is the definition: what each strategy writes. On a
PostgreSQL shop the sweep can let the database compute the same values in one
`UPDATE ... FROM` per target and batch instead of reading every row into Python
and writing it back. Each expression here must give exactly what its Python
function gives; tests/integration/test_sql_strategies.py checks that on real
PostgreSQL, value by value. A strategy (or a column kind) without an expression
here is simply applied in Python.

HMAC-SHA256 is built from PostgreSQL's own `sha256()` (no extension needed):
HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)), the two padded keys computed
here, once, and sent as parameters, never pasted into the SQL text. K is the
pseudonyms' own key (worker/domain/hashing.py), as in Python.

`random` and `random_email` cannot give the same values as Python, only values
of the same form: PostgreSQL draws them from `gen_random_uuid()` (core since
PostgreSQL 13, from the server's strong random source, pg_strong_random), its
122 random bits spelt in RANDOM_ALPHABET's letters.

Why the expressions have the shape they have: a sweep evaluates them for every
row it updates, and they were most of the cost of its `UPDATE ... FROM
json_to_recordset(...)` (worker/shop/binding.py) beyond the write itself.
PostgreSQL evaluates a subexpression each time it is written (it shares none), and
computing one once per row is no way out: an UPDATE's FROM cannot hold a LATERAL
that reads the row being updated ("invalid reference to FROM-clause entry"), and a
scalar subquery per row costs more than it saves. So what repeats is made cheap:

- `department` works on the value under the "C" collation, where `upper()`
  changes the ASCII letters a-z and nothing else (Python's _UPPER; PostgreSQL's
  documentation: in "C" only the ASCII letters are letters) and comparisons go
  by bytes. It replaces `translate()` over the 26 letters, which cost four times
  `btrim()` and `upper()` together and was written nine times: the expression
  went from about 3.5 µs a row to 0.65. The postcode is tested first, as in
  Python, since it is the usual value.
- the random letters are spelt by one `replace()` per hex digit: `translate()`
  looks each of the 32 digits up among 16, character by character, and cost more
  than sixteen replace() calls (2.5 µs against 1.5; gen_random_uuid() itself
  takes about 0.9).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from worker.domain.hashing import PSEUDONYMS, purpose_key
from worker.domain.strategies import (
    AMOUNT_BOUNDS,
    DEPARTMENT_PATTERN,
    ERASED_DOMAIN,
    HASH_PATTERN,
    HASH_PREFIX,
    POSTCODE_PATTERN,
    PSEUDONYM_PREFIX,
    RANDOM_ALPHABET,
    REDACTED,
    WHITESPACE,
    ColumnFacts,
    hash_digits,
    pseudonym_digits,
    random_email_length,
    random_length,
)

_BLOCK = 64  # SHA-256's block size, in bytes


@dataclass(frozen=True)
class HmacKey:
    """The secret, padded as HMAC-SHA256 needs it."""

    inner: bytes
    outer: bytes

    @classmethod
    def of(cls, secret: bytes) -> HmacKey:
        """The pseudonyms' key derived from LETHE_SECRET, padded."""
        key = purpose_key(secret, PSEUDONYMS)
        key = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
        key = key.ljust(_BLOCK, b"\0")
        return cls(bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key))

    def hex_of(self, message: ColumnElement) -> ColumnElement:
        """The lower-case hex HMAC-SHA256 of a text expression (its UTF-8 bytes)."""
        inner = sa.literal(self.inner, sa.LargeBinary).op("||")(sa.func.convert_to(message, "UTF8"))
        outer = sa.literal(self.outer, sa.LargeBinary).op("||")(sa.func.sha256(inner))
        return sa.func.encode(sa.func.sha256(outer), "hex")


@dataclass(frozen=True)
class SqlContext:
    key: HmacKey
    subject: ColumnElement  # the row's subject (`customer:42`), as text
    column: ColumnFacts
    constant: Any = None  # what `{constant: VALUE}` writes


SqlStrategy = Callable[[ColumnElement, SqlContext], ColumnElement]


def _text(value: Any) -> ColumnElement:
    return sa.literal(value, sa.Text)


def _whole(pattern: str) -> str:
    """A pattern that must match the whole value, as Python's `re.fullmatch` does."""
    return f"^({pattern})$"


def _unless_null(column: ColumnElement, value: ColumnElement) -> ColumnElement:
    return sa.case((column.is_(None), sa.null()), else_=value)


def null(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    return sa.null()


def redact(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    return _unless_null(column, _text(REDACTED))


def constant(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    return _unless_null(column, _text(ctx.constant))


def _random_letters(length: int) -> ColumnElement:
    # a fresh uuid per row (volatile)
    return uuid_letters(sa.func.gen_random_uuid(), length)


_HEX_DIGITS = "0123456789abcdef"
# One replace() per hex digit must never meet a letter an earlier one wrote: the letters
# a-f are hex digits too, so the digits a-f are spelt first (k-p), 0-9 after (a-j).
_SPELLING = sorted(zip(_HEX_DIGITS, RANDOM_ALPHABET, strict=True), key=lambda p: p[0].isdigit())


def uuid_letters(uuid: ColumnElement, length: int) -> ColumnElement:
    """The first `length` of a uuid's 32 hex digits, each spelt as the RANDOM_ALPHABET
    letter of its value (0 -> a ... f -> p)."""
    letters = sa.func.replace(sa.cast(uuid, sa.Text), _text("-"), _text(""))
    for digit, letter in _SPELLING:
        letters = sa.func.replace(letters, _text(digit), _text(letter))
    return sa.func.left(letters, length)


def random(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    return _unless_null(column, _random_letters(random_length(ctx.column)))


def random_email(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    room = random_email_length(ctx.column)
    erased = sa.cast(column, sa.Text).endswith(ERASED_DOMAIN, autoescape=True)
    return sa.case(
        (column.is_(None), column),
        (erased, column),
        else_=_random_letters(room).concat(_text(ERASED_DOMAIN)),
    )


def keyed_hash(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    digits = hash_digits(ctx.column)
    message: ColumnElement = column
    if ctx.column.unique:
        # strategies.hashed_message: "<length of subject>:<subject><value>"
        length = sa.cast(sa.func.char_length(ctx.subject), sa.Text)
        message = length.concat(_text(":")).concat(ctx.subject).concat(column)
    hashed = _text(HASH_PREFIX).concat(sa.func.left(ctx.key.hex_of(message), digits))
    # as text: CHAR(n)'s own match counts its padding, citext's ignores case
    already = sa.cast(column, sa.Text).regexp_match(_whole(HASH_PATTERN))
    return sa.case((column.is_(None), column), (already, column), else_=hashed)


def pseudonym(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    digits = pseudonym_digits(ctx.column)
    name = ctx.key.hex_of(_text("pseudonym:").concat(ctx.subject))
    return _unless_null(column, _text(PSEUDONYM_PREFIX).concat(sa.func.left(name, digits)))


def year(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    if ctx.column.zone:
        # the year as it begins in that zone, whatever the session's (PostgreSQL 12+)
        return sa.func.date_trunc("year", column, _text(ctx.column.zone))
    truncated = sa.func.date_trunc("year", column)
    return sa.cast(truncated, column.type) if ctx.column.kind == "date" else truncated


def department(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    # "C": upper() of the ASCII letters only, and byte comparisons (module doc)
    text = sa.func.upper(sa.func.btrim(sa.cast(column, sa.Text).collate("C"), _text(WHITESPACE)))
    first = sa.func.left(text, 2)
    three = sa.func.left(text, 3)
    french = sa.case(
        {"97": three, "98": three, "20": sa.case((three < "202", "2A"), else_="2B")},
        value=first,
        else_=first,
    )
    return sa.case(
        (column.is_(None), sa.null()),
        (text.regexp_match(_whole(POSTCODE_PATTERN)), french),
        (text.regexp_match(_whole(DEPARTMENT_PATTERN)), text),
        else_=sa.func.btrim(first, _text(WHITESPACE)),
    )


def amount_range(column: ColumnElement, ctx: SqlContext) -> ColumnElement:
    # Numbers only: text amounts (parsed, written back as "100-250") stay in Python.
    low = sa.case(
        *((column >= bound, sa.literal(bound)) for bound in reversed(AMOUNT_BOUNDS[1:])),
        else_=sa.literal(0),
    )
    negative = -sa.case(
        *((-column >= bound, sa.literal(bound)) for bound in reversed(AMOUNT_BOUNDS[1:])),
        else_=sa.literal(0),
    )
    # PostgreSQL sorts NaN above every number, so it would take the widest range: left as
    # it is, as in Python
    nan = sa.cast(column, sa.Text) == "NaN"
    amount = sa.case((nan, column), (column < 0, negative), else_=low)
    return sa.cast(_unless_null(column, amount), column.type)


SQL_STRATEGIES: dict[str, tuple[SqlStrategy, frozenset[str]]] = {
    # strategy: (expression, the column kinds it is written for)
    "null": (null, frozenset({"text", "integer", "numeric", "date", "datetime", "other"})),
    "redact": (redact, frozenset({"text"})),
    "constant": (constant, frozenset({"text"})),
    "random": (random, frozenset({"text"})),
    "random_email": (random_email, frozenset({"text"})),
    "keyed_hash": (keyed_hash, frozenset({"text"})),
    "pseudonym": (pseudonym, frozenset({"text"})),
    "year": (year, frozenset({"date", "datetime"})),
    "department": (department, frozenset({"text"})),
    "amount_range": (amount_range, frozenset({"integer", "numeric"})),
}


def sql_form(name: str, column: ColumnFacts) -> SqlStrategy | None:
    """The expression for this strategy on this column, or None (apply it in Python)."""
    form = SQL_STRATEGIES.get(name)
    if form is None or column.kind not in form[1]:
        return None
    return form[0]
