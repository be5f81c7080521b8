"""The shop's constraints, as far as the strategies' outputs meet them: UNIQUE and CHECK
read at start, and what the database names when one refuses a row anyway.

Reflection gives plain UNIQUE constraints and indexes; a unique index on an
expression (`lower(email)`) or on some rows only (`WHERE active`) also refuses
two redacted addresses, and a CHECK constraint (`email LIKE '%@%'`) may refuse
what a strategy writes. Either way the anonymised row would be rolled back and
the person fail again at every sweep, so worker/shop/binding.py checks these at start.

A PostgreSQL domain (`CREATE DOMAIN pc AS varchar(5) NOT NULL CHECK (...)`) carries
constraints of its own, which reflection half loses: they are read from the catalog
here and tried like the table's. Triggers are not constraints: worker/shop/triggers.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import DOMAIN
from sqlalchemy.engine import Engine

from worker.domain.strategies import ColumnFacts, Context, StrategyError, apply
from worker.shop import mysql

# Rows a CHECK constraint is tried on: enough to meet the usual shapes of a column's values,
# few enough to cost a start nothing.
TRIAL_ROWS = 20

# What a strategy is given on a table with no row to try (a shop installed with Lethe):
# most outputs do not depend on the input (redact, keyed hash, pseudonym, null), and
# these are values the others read (a postcode for generalise, a date, an amount).
SAMPLE_INPUTS: dict[str, Any] = {
    "text": "75002",
    "integer": 1500,
    "numeric": Decimal("1500"),
    "date": date(2020, 5, 4),
    "datetime": datetime(2020, 5, 4, 12, 0),
}
SAMPLE_SUBJECT = "lethe-trial"


@dataclass(frozen=True)
class Unique:
    """Columns whose values the table keeps unique together. `whole` is False for a partial
    index or one on an expression: it refuses duplicates, yet does not make a key name one row.
    """

    columns: frozenset[str]
    whole: bool = True
    # characters of a column the index keeps, where it keeps only its first (MySQL)
    prefix: dict[str, int] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Check:
    name: str | None
    sqltext: str
    columns: frozenset[str]
    domain: str | None = None  # the PostgreSQL domain that declares it, not the table

    def __str__(self) -> str:
        named = f"{self.name} " if self.name else ""
        on = f" on domain {self.domain}" if self.domain else ""
        return f"CHECK constraint {named}({self.sqltext}){on}"


@dataclass(frozen=True)
class Domain:
    """The PostgreSQL domain a column is declared with, unwrapped down to what it stores.

    Reflection keeps the base type's kind but not its length (`varchar(5)` comes back
    as VARCHAR()), nor a NOT NULL or the CHECKs of a domain the domain is based on.
    """

    name: str  # as PostgreSQL spells it: `pc`, or `crm.pc` outside the search path
    base: str  # the base type with its modifiers: `character varying(5)`
    length: int | None  # characters a varchar or char base holds
    not_null: bool  # on this domain or on one it is based on
    checks: tuple[tuple[str, str, str], ...] = ()  # (constraint, its domain, text with VALUE)


def unique_sets(inspector: sa.Inspector, table: str) -> list[Unique]:
    """Every set of columns the table keeps unique, whole or in part."""
    names = [c["name"] for c in inspector.get_columns(table)]
    pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
    found = [Unique(frozenset(pk))] if pk else []
    if not mysql.is_mysql(inspector.bind.dialect):
        # MySQL's are its unique indexes again, without their prefix lengths
        found += [
            Unique(frozenset(c["column_names"])) for c in inspector.get_unique_constraints(table)
        ]
    for index in inspector.get_indexes(table):
        if not index.get("unique"):
            continue
        # an expression is None among the index's columns; its text names the columns
        plain = {c for c in index["column_names"] if c is not None}
        named = set().union(*(named_in(e, names) for e in index.get("expressions") or []))
        partial = any(
            k.endswith("_where") and v for k, v in index.get("dialect_options", {}).items()
        )
        found.append(
            Unique(
                frozenset(plain | named),
                whole=not named and not partial,
                prefix=mysql.prefix_lengths(index),
            )
        )
    if inspector.bind.dialect.name == "sqlite":
        found += _sqlite_expression_indexes(inspector, table, names)
    return found


def _sqlite_expression_indexes(
    inspector: sa.Inspector, table: str, names: list[str]
) -> list[Unique]:
    # SQLAlchemy skips SQLite's indexes on expressions (with a warning): read their text.
    reflected = {i["name"] for i in inspector.get_indexes(table)}
    query = sa.text(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t "
        "AND sql IS NOT NULL"
    )
    with inspector.bind.connect() as connection:
        rows = connection.execute(query, {"t": table}).all()
    found = []
    for name, sql in rows:
        if name in reflected or not re.match(r"\s*CREATE\s+UNIQUE\b", sql, re.IGNORECASE):
            continue
        columns = named_in(sql.split("(", 1)[-1], names)
        if columns:
            found.append(Unique(frozenset(columns), whole=False))
    return found


def check_constraints(
    inspector: sa.Inspector, table: str, domains: Mapping[str, Domain] | None = None
) -> list[Check]:
    """The table's CHECK constraints, and those of the domains its columns are declared
    with (`domains`, from column_domains), each written on its column as a table's is."""
    names = [c["name"] for c in inspector.get_columns(table)]
    if mysql.is_mysql(inspector.bind.dialect):
        # reflection misses MariaDB's column-level CHECKs: the catalog has them all
        with inspector.bind.connect() as connection:
            declared = mysql.check_clauses(connection, table)
    else:
        declared = [(c.get("name"), c["sqltext"]) for c in inspector.get_check_constraints(table)]
    found = [Check(name, text, frozenset(named_in(text, names))) for name, text in declared]
    quote = inspector.bind.dialect.identifier_preparer.quote
    for column, domain in (domains or {}).items():
        for name, declared_on, text in domain.checks:
            sqltext = outer_parentheses_off(value_as(text, quote(column)))
            found.append(Check(name, sqltext, frozenset({column}), declared_on))
    return found


# PostgreSQL's own rendering of a domain's CHECK: string literals with their quotes
# doubled, identifiers double-quoted, and the checked value as the bare keyword VALUE.
_LITERAL = r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\""
_VALUE = re.compile(rf"(?P<literal>{_LITERAL})|(?<![\w$.])VALUE(?![\w$])")


def value_as(check: str, column: str) -> str:
    """A domain's CHECK as it reads on one column: each VALUE keyword replaced by the
    column's (quoted) name, and nothing inside a string literal or a quoted identifier
    (`VALUE <> 'VALUE'`), nor within a longer name (`value_ok(VALUE)`), touched."""
    return _VALUE.sub(lambda m: m["literal"] or column, check)


def outer_parentheses_off(text: str) -> str:
    """`(a AND b)` as `a AND b`, as the table CHECKs read; `(a) AND (b)` stays whole."""
    stripped = re.sub(_LITERAL, lambda m: "_" * len(m[0]), text)  # no parenthesis counted
    while stripped.startswith("(") and stripped.endswith(")"):
        depth = 0
        for i, char in enumerate(stripped):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0 and i < len(stripped) - 1:
                return text  # the first parenthesis closes before the end
        text, stripped = text[1:-1], stripped[1:-1]
    return text


def domain_base(column_type: sa.types.TypeEngine) -> sa.types.TypeEngine:
    """The type a domain (or a domain over a domain) stores, as reflection knows it:
    the right kind, without its length (Domain.length has that)."""
    while isinstance(column_type, DOMAIN):
        column_type = column_type.data_type
    return column_type


class OperableDomain(DOMAIN):
    """A reflected domain that compares as its base type does. SQLAlchemy 2.1's DOMAIN
    declares no operator classes, so every `IS NULL` or `>=` a sweep builds on a domain
    column warns that it will be an error in a later release."""

    @property
    def operator_classes(self) -> Any:
        return domain_base(self.data_type).operator_classes


def operable_domains(table: sa.Table) -> None:
    """The reflected table's domain columns typed as OperableDomain: the same name in a
    CAST, so PostgreSQL still applies the domain's constraints."""
    for column in table.columns:
        if isinstance(column.type, DOMAIN) and not isinstance(column.type, OperableDomain):
            column.type = column.type.adapt(OperableDomain)


# Every level of a column's domain, the outermost first, with its CHECKs. A level's
# typtypmod is the base type's (varchar's length + 4); a domain over a domain has none.
_DOMAIN_LEVELS = sa.text(
    """
    WITH RECURSIVE levels AS (
        SELECT a.attname AS column_name, a.atttypid AS type_oid, 0 AS depth
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = to_regclass(format('%I.%I', current_schema(), CAST(:table AS text)))
          AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype = 'd'
      UNION ALL
        SELECT l.column_name, t.typbasetype, l.depth + 1
        FROM levels l JOIN pg_type t ON t.oid = l.type_oid JOIN pg_type b ON b.oid = t.typbasetype
        WHERE b.typtype = 'd'
    )
    SELECT l.column_name, format_type(t.oid, NULL) AS domain_name, t.typnotnull AS not_null,
           format_type(t.typbasetype, t.typtypmod) AS base,
           CASE WHEN t.typbasetype IN ('varchar'::regtype, 'bpchar'::regtype)
                 AND t.typtypmod >= 4 THEN t.typtypmod - 4 END AS length,
           c.conname, pg_get_expr(c.conbin, 0) AS check_text
    FROM levels l JOIN pg_type t ON t.oid = l.type_oid
    LEFT JOIN pg_constraint c ON c.contypid = t.oid AND c.contype = 'c'
    ORDER BY l.column_name, l.depth, c.conname
    """
)


def column_domains(inspector: sa.Inspector, table: str) -> dict[str, Domain]:
    """The table's columns declared with a domain, by column name (PostgreSQL only)."""
    if inspector.bind.dialect.name != "postgresql":
        return {}
    with inspector.bind.connect() as connection:
        rows = connection.execute(_DOMAIN_LEVELS, {"table": table}).mappings().all()
    levels: dict[str, list[Any]] = {}
    for row in rows:
        levels.setdefault(row["column_name"], []).append(row)
    return {column: _domain(found) for column, found in levels.items()}


def _domain(levels: list[Any]) -> Domain:
    # the outermost level names it, the innermost holds the base type; each level's
    # NOT NULL and CHECKs bind the column too
    innermost = levels[-1]
    return Domain(
        name=levels[0]["domain_name"],
        base=innermost["base"],
        length=innermost["length"],
        not_null=any(level["not_null"] for level in levels),
        checks=tuple(
            (level["conname"], level["domain_name"], level["check_text"])
            for level in levels
            if level["conname"] is not None
        ),
    )


def named_in(expression: str, columns: Iterable[str]) -> set[str]:
    """The columns an SQL expression names. May name one too many (a column called `lower`
    in `lower(email)`), which only makes the checks stricter, never looser."""
    return {
        c
        for c in columns
        if re.search(rf"(?<![\w$]){re.escape(c)}(?![\w$])", expression, re.IGNORECASE)
    }


def broken_checks(
    engine: Engine,
    table: sa.Table,
    key: str,
    strategies: dict[str, str],
    facts: dict[str, ColumnFacts],
    checks: list[Check],
    secret: bytes,
    domains: Mapping[str, Domain] | None = None,
    constants: Mapping[str, Any] | None = None,
) -> list[Check]:
    """The checks that the strategies' outputs break on some of the table's rows.

    Reads the newest rows (the oldest are the likeliest to be anonymised already) and has
    the database evaluate each check on them as the strategies would leave them, in a
    SELECT: nothing is written. A check met by these rows may still refuse another
    row's output; the sweep then fails that person alone and its audit names the check.
    A table with no such row is tried on a sample row: the strategies' outputs of
    SAMPLE_INPUTS, every other column NULL (so a check on other columns too is unknown,
    which lets the row through: only what the strategies write can be refused).
    """
    relevant = [c for c in checks if c.columns & strategies.keys()]
    if not relevant:
        return []
    order = [c.desc() for c in table.primary_key.columns]  # tried only with one
    written = [table.c[c].isnot(None) for c in strategies]
    query = sa.select(table).where(sa.or_(*written)).order_by(*order).limit(TRIAL_ROWS)
    broken: dict[int, Check] = {}
    with engine.connect() as connection:
        # A check may call a function of the shop's: whatever it would write is refused
        # (PostgreSQL), and the connection closes without a commit either way.
        connection.execution_options(postgresql_readonly=True)
        try:
            rows = connection.execute(query).mappings().all()
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            raise  # the shop went away: the caller says so
        except (sa.exc.StatementError, ValueError, TypeError):
            # A value its column's type cannot read (SQLite keeps any text in a DATE
            # column), and whose message would quote it: nothing to try the checks on.
            # The sweep fails that person alone, and its audit says why.
            return []
        constants = constants or {}
        trials = [_after(row, key, strategies, facts, secret, constants) for row in rows] or [
            _sample(table, strategies, facts, secret, constants)
        ]
        for after in trials:
            if after is None:
                continue
            try:
                statement = _verdicts(table, relevant, after, engine.dialect.name, domains or {})
                verdicts = connection.execute(statement).one()
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                raise  # the shop went away: the caller says so
            except (sa.exc.StatementError, sa.exc.CompileError):
                # a value the database cannot cast back (a type SQLAlchemy does not know):
                # nothing to conclude from this row, the sweep will say if it breaks
                connection.rollback()
                continue
            broken.update({i: relevant[i] for i, refused in enumerate(verdicts) if refused})
    return [broken[i] for i in sorted(broken)]


def _after(
    row: Any,
    key: str,
    strategies: dict[str, str],
    facts: dict[str, ColumnFacts],
    secret: bytes,
    constants: Mapping[str, Any],
) -> dict[str, Any] | None:
    values = dict(row)
    subject = str(row[key])
    try:
        for column, strategy in strategies.items():
            ctx = Context(secret, subject, facts[column], constants.get(column))
            values[column] = apply(strategy, row[column], ctx)
    except StrategyError:
        return None  # a value no strategy reads: the sweep fails that person and says so
    return values


def _sample(
    table: sa.Table,
    strategies: dict[str, str],
    facts: dict[str, ColumnFacts],
    secret: bytes,
    constants: Mapping[str, Any],
) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(table.columns.keys())
    for column, strategy in strategies.items():
        given = SAMPLE_INPUTS.get(facts[column].kind)
        if given is None:
            continue
        if facts[column].length is not None and isinstance(given, str):
            given = given[: facts[column].length]
        # no output to try: left NULL, which no check refuses
        with contextlib.suppress(StrategyError):
            ctx = Context(secret, SAMPLE_SUBJECT, facts[column], constants.get(column))
            values[column] = apply(strategy, given, ctx)
    return values


def _verdicts(
    table: sa.Table,
    checks: list[Check],
    values: dict[str, Any],
    dialect: str,
    domains: Mapping[str, Domain],
) -> Any:
    # The row as one derived table under the table's own name, so the check's text reads
    # its columns (and `customers.email`, had it been written so) as it does in the shop.
    columns = [
        _value(i, c, values[c.name], dialect, domains.get(c.name))
        for i, c in enumerate(table.columns)
    ]
    row = sa.select(*columns).subquery(table.name)
    # literal_column: the check is the shop's own SQL, read from its catalog; `IS FALSE`
    # because a check whose result is NULL lets the row through.
    return sa.select(*(sa.literal_column(f"(({c.sqltext}) IS FALSE)") for c in checks)).select_from(
        row
    )


def _value(i: int, column: sa.Column, value: Any, dialect: str, domain: Domain | None) -> Any:
    if domain is not None:
        # A CAST to the domain would itself raise on the check to be named (and say nothing
        # of which): the value goes in as the base type, and the domain's checks are tried
        # as expressions (check_constraints) like the table's.
        bound = sa.bindparam(f"v{i}", value, type_=domain_base(column.type))
        return sa.cast(bound, _Spelled(domain.base)).label(column.name)
    bound = sa.bindparam(f"v{i}", value, type_=column.type)
    if dialect in ("sqlite", "mysql", "mariadb") or isinstance(column.type, sa.types.NullType):
        # SQLite keeps what it is given (a CAST to DATE there would make 2020 of
        # '2020-05-04'); MySQL's CAST knows no VARCHAR(n) nor TEXT, and compares a
        # literal as the column would; a type SQLAlchemy does not know cannot be named
        return bound.label(column.name)
    return sa.cast(bound, column.type).label(column.name)  # as the UPDATE would store it


class _Spelled(sa.types.UserDefinedType):
    """A type named as PostgreSQL's format_type spells it (`character varying(5)`)."""

    cache_ok = True

    def __init__(self, spelling: str):
        self.spelling = spelling

    def get_col_spec(self, **_: Any) -> str:
        return self.spelling


def failure_text(exc: BaseException) -> str:
    """Why the shop refused a subject's erasure, for its audit row: the exception's type,
    and the constraint when the database names one, as in "IntegrityError: CHECK
    constraint email_has_at on customers" (PostgreSQL) or "IntegrityError: UNIQUE
    constraint on customers.email" (SQLite), so an operator can fix the register.

    Never the message as a whole: PostgreSQL's DETAIL quotes the key's values, and a
    trigger's text may say anything about the row."""
    orig = getattr(exc, "orig", None)
    said = _postgres_constraint(orig) or _sqlite_constraint(orig) or mysql.mysql_constraint(orig)
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
_NAME = re.compile(_IDENTIFIER)
# integrity_constraint_violation (SQLSTATE class 23), by the constraint's kind
_POSTGRES_KINDS = {
    "23502": "NOT NULL",
    "23503": "FOREIGN KEY",
    "23505": "UNIQUE",
    "23514": "CHECK",
    "23P01": "EXCLUDE",
}


def _postgres_constraint(orig: Any) -> str | None:
    """Kind, name and table from psycopg's diagnostics, which are schema names only."""
    kind = _POSTGRES_KINDS.get(getattr(orig, "sqlstate", None) or "")
    diag = getattr(orig, "diag", None)
    # PL/pgSQL's RAISE may set any SQLSTATE and CONSTRAINT, a row's value included
    if kind is None or diag is None or diag.source_function == "exec_stmt_raise":
        return None
    names = (diag.constraint_name, diag.table_name, diag.column_name)
    if any(n is not None and not _NAME.fullmatch(n) for n in names):
        return None  # a quoted name with spaces or symbols is not told apart from data
    name, table, column = names
    where = f"{table}.{column}" if table and column else table
    if not (name or where):
        return None
    parts = (f"{kind} constraint", name, f"on {where}" if where else None)
    return " ".join(part for part in parts if part)


_SQLITE_KINDS = {
    "SQLITE_CONSTRAINT_CHECK": "CHECK",
    "SQLITE_CONSTRAINT_NOTNULL": "NOT NULL",
    "SQLITE_CONSTRAINT_PRIMARYKEY": "UNIQUE",
    "SQLITE_CONSTRAINT_UNIQUE": "UNIQUE",
}
_COLUMN = rf"{_IDENTIFIER}\.{_IDENTIFIER}"
_SQLITE_SAID = re.compile(
    rf"(?P<kind>CHECK|NOT NULL|UNIQUE) constraint failed: "
    rf"(?:(?P<columns>{_COLUMN}(?:, {_COLUMN})*)|index '(?P<index>{_IDENTIFIER})'"
    rf"|(?P<name>{_IDENTIFIER}))"
)


def _sqlite_constraint(orig: Any) -> str | None:
    """The constraint SQLite's message names, when the message is SQLite's own and has
    the shape of a constraint's: an unnamed CHECK's message is its expression, not a name."""
    kind = _SQLITE_KINDS.get(getattr(orig, "sqlite_errorname", None) or "")
    # A trigger's RAISE(ABORT, ...) is SQLITE_CONSTRAINT_TRIGGER, whatever its text says.
    message = orig.args[0] if kind and orig.args and isinstance(orig.args[0], str) else ""
    said = _SQLITE_SAID.fullmatch(message)
    if said is None or said["kind"] != kind:
        return None
    if said["columns"]:
        return f"{kind} constraint on {said['columns']}"
    return f"{kind} constraint {said['index'] or said['name']}"
