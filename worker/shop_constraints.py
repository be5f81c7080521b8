"""The shop's constraints, as far as the strategies' outputs meet them: UNIQUE and CHECK
read at start, and what the database names when one refuses a row anyway.

Reflection gives plain UNIQUE constraints and indexes; a unique index on an
expression (`lower(email)`) or on some rows only (`WHERE active`) also refuses
two redacted addresses, and a CHECK constraint (`email LIKE '%@%'`) may refuse
what a strategy writes. Either way the anonymised row would be rolled back and
the person fail again at every sweep, so worker/shop.py checks these at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.strategies import ColumnFacts, Context, StrategyError, apply

# Rows a CHECK constraint is tried on: enough to meet the usual shapes of a column's values,
# few enough to cost a start nothing.
TRIAL_ROWS = 20


@dataclass(frozen=True)
class Unique:
    """Columns whose values the table keeps unique together. `whole` is False for a partial
    index or one on an expression: it refuses duplicates, yet does not make a key name one row.
    """

    columns: frozenset[str]
    whole: bool = True


@dataclass(frozen=True)
class Check:
    name: str | None
    sqltext: str
    columns: frozenset[str]

    def __str__(self) -> str:
        named = f"{self.name} " if self.name else ""
        return f"CHECK constraint {named}({self.sqltext})"


def unique_sets(inspector: sa.Inspector, table: str) -> list[Unique]:
    """Every set of columns the table keeps unique, whole or in part."""
    names = [c["name"] for c in inspector.get_columns(table)]
    pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
    found = [Unique(frozenset(pk))] if pk else []
    found += [Unique(frozenset(c["column_names"])) for c in inspector.get_unique_constraints(table)]
    for index in inspector.get_indexes(table):
        if not index.get("unique"):
            continue
        # an expression is None among the index's columns; its text names the columns
        plain = {c for c in index["column_names"] if c is not None}
        named = set().union(*(named_in(e, names) for e in index.get("expressions") or []))
        partial = any(k.endswith("_where") and v for k, v in index["dialect_options"].items())
        found.append(Unique(frozenset(plain | named), whole=not named and not partial))
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


def check_constraints(inspector: sa.Inspector, table: str) -> list[Check]:
    names = [c["name"] for c in inspector.get_columns(table)]
    return [
        Check(c.get("name"), c["sqltext"], frozenset(named_in(c["sqltext"], names)))
        for c in inspector.get_check_constraints(table)
    ]


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
) -> list[Check]:
    """The checks that the strategies' outputs break on some of the table's rows.

    Reads the newest rows (the oldest are the likeliest to be anonymised already) and has
    the database evaluate each check on them as the strategies would leave them, in a
    SELECT: nothing is written. A check met by these rows may still refuse another
    row's output; the sweep then fails that person alone and its audit names the check.
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
        for row in rows:
            after = _after(row, key, strategies, facts, secret)
            if after is None:
                continue
            try:
                statement = _verdicts(table, relevant, after, engine.dialect.name)
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
    row: Any, key: str, strategies: dict[str, str], facts: dict[str, ColumnFacts], secret: bytes
) -> dict[str, Any] | None:
    values = dict(row)
    subject = str(row[key])
    try:
        for column, strategy in strategies.items():
            values[column] = apply(strategy, row[column], Context(secret, subject, facts[column]))
    except StrategyError:
        return None  # a value no strategy reads: the sweep fails that person and says so
    return values


def _verdicts(table: sa.Table, checks: list[Check], values: dict[str, Any], dialect: str) -> Any:
    # The row as one derived table under the table's own name, so the check's text reads
    # its columns (and `customers.email`, had it been written so) as it does in the shop.
    columns = [_value(i, c, values[c.name], dialect) for i, c in enumerate(table.columns)]
    row = sa.select(*columns).subquery(table.name)
    # literal_column: the check is the shop's own SQL, read from its catalog; `IS FALSE`
    # because a check whose result is NULL lets the row through.
    return sa.select(*(sa.literal_column(f"(({c.sqltext}) IS FALSE)") for c in checks)).select_from(
        row
    )


def _value(i: int, column: sa.Column, value: Any, dialect: str) -> Any:
    bound = sa.bindparam(f"v{i}", value, type_=column.type)
    if dialect == "sqlite" or isinstance(column.type, sa.types.NullType):
        # SQLite keeps what it is given (a CAST to DATE there would make 2020 of
        # '2020-05-04'); a type SQLAlchemy does not know cannot be named in a CAST
        return bound.label(column.name)
    return sa.cast(bound, column.type).label(column.name)  # as the UPDATE would store it


def failure_text(exc: BaseException) -> str:
    """Why the shop refused a subject's erasure, for its audit row: the exception's type,
    and the constraint when the database names one, as in "IntegrityError: CHECK
    constraint email_has_at on customers" (PostgreSQL) or "IntegrityError: UNIQUE
    constraint on customers.email" (SQLite), so an operator can fix the register.

    Never the message as a whole: PostgreSQL's DETAIL quotes the key's values, and a
    trigger's text may say anything about the row."""
    orig = getattr(exc, "orig", None)
    said = _postgres_constraint(orig) or _sqlite_constraint(orig)
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
