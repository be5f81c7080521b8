"""Applying bound targets to the shop's rows: the order of a batch's steps, the rows a
`delete_rows` removed, and the writes themselves (per row in Python, or one set-based
UPDATE on PostgreSQL). Counting the rows a dry run would touch shares the same steps."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.domain.hashing import value_hash
from worker.domain.strategies import Context, apply, is_anonymised
from worker.shop import mysql
from worker.shop.binding import BoundTarget
from worker.store.sessions import ONE_OF_CHUNK, chunks, one_of


@dataclass
class Applied:
    """What one batch did: rows per (subject, activity, target) and the suppression hashes
    as (subject, hash, activity)."""

    rows: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    suppressed: list[tuple[str, str, str]] = field(default_factory=list)


def _subject_of(keys: dict[Any, str], key: Any) -> str:
    """The subject a row's key names; a CHAR(n) key comes back blank-padded."""
    if isinstance(key, str) and key not in keys:
        return keys[key.rstrip(" ")]
    return keys[key]


class RemovedRows:
    """Keys whose rows a `delete_rows` target removed, per (table, key column): another
    target of the same table and key finds no row left for them.

    The sweep keeps one per batch (the shop itself remembers earlier batches); a dry run,
    which deletes nothing, keeps one for the whole run. `shared` limits it to the (table,
    key column) pairs more than one target reads, so a dry run over millions of due
    lifecycles holds only the keys it will be asked about again.
    """

    def __init__(self, shared: set[tuple[str, str]] | None = None):
        self.shared = shared
        self._keys: dict[tuple[str, str], set[Any]] = defaultdict(set)

    @classmethod
    def for_targets(cls, targets: Iterable[BoundTarget]) -> RemovedRows:
        readers: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        for bound in targets:
            readers[_rows_of(bound)].add((bound.activity, bound.name))
        return cls({rows for rows, idents in readers.items() if len(idents) > 1})

    def keys(self, bound: BoundTarget) -> set[Any] | frozenset[Any]:
        """The keys whose rows are gone from this target's table and key column."""
        return self._keys.get(_rows_of(bound), frozenset())

    def remove(self, bound: BoundTarget, keys: Iterable[Any]) -> None:
        rows = _rows_of(bound)
        if self.shared is None or rows in self.shared:
            self._keys[rows].update(keys)


def _rows_of(bound: BoundTarget) -> tuple[str, str]:
    return bound.table.name, bound.target.key


@dataclass(frozen=True)
class Step:
    """One target applied to some subjects' rows: `keys` maps each key value still naming
    rows to its subject; `subjects` are all the step's subjects, audited even without rows."""

    bound: BoundTarget
    subjects: list[str]
    keys: dict[Any, str]


_UNREAD = object()


def plan_steps(work: Sequence[tuple[str, BoundTarget]], removed: RemovedRows) -> list[Step]:
    """The order in which a batch's (subject, target) pairs are applied, and the keys each
    step still finds rows for: the one decision the sweep acts on and the dry run counts.

    Targets go in the order the batch first names them (the batch is in deadline order);
    a key whose rows an earlier step deleted is left out of later steps on the same table
    and key column (an invoice deleted by `crm.invoices` is not also anonymised by
    `crm.customers`), and is recorded in `removed` for the batches after this one.
    """
    subjects: dict[tuple[str, str], list[str]] = defaultdict(list)
    targets: dict[tuple[str, str], BoundTarget] = {}
    for subject, bound in work:
        ident = (bound.activity, bound.name)
        targets[ident] = bound
        subjects[ident].append(subject)
    steps = []
    # A customer's id names its rows in four tables: each subject's key is read once per
    # spelling (the subject or its id) and key column.
    spelled: dict[tuple[str, Any], dict[str, Any]] = {}
    for ident, named in subjects.items():
        bound = targets[ident]
        known = spelled.setdefault((bound.target.key_value, bound.facts[bound.target.key]), {})
        gone = removed.keys(bound)
        keys = {}
        for subject in named:
            key = known.get(subject, _UNREAD)
            if key is _UNREAD:
                key = known[subject] = bound.key_for(subject)
            if key is not None and key not in gone:
                keys[key] = subject
        if bound.target.delete_rows:
            removed.remove(bound, keys)
        steps.append(Step(bound, named, keys))
    return steps


def apply_targets(
    connection: Connection,
    work: Sequence[tuple[str, BoundTarget]],
    secret: bytes,
) -> Applied:
    """Apply the strategies of each (subject, target) pair, inside the caller's transaction."""
    applied = Applied()
    postgres = connection.dialect.name == "postgresql"
    for step in plan_steps(work, RemovedRows()):
        bound, keys = step.bound, step.keys
        for subject in step.subjects:
            applied.rows[(subject, bound.activity, bound.name)] += 0
        for chunk in chunks(keys, ONE_OF_CHUNK):
            if bound.target.delete_rows:
                _delete(connection, bound, chunk, keys, secret, applied)
            elif bound.target.columns and postgres and bound.sql_update(secret) is not None:
                _anonymise_in_sql(connection, bound, chunk, keys, secret, applied)
            elif bound.target.columns:
                _anonymise(connection, bound, chunk, keys, secret, applied)
            else:
                _count(connection, bound, chunk, keys, applied)
    return applied


def _named(key: sa.Column, values: list[Any], connection: Connection) -> Any:
    """The rows whose key is one of `values`, as Python compares them."""
    if mysql.is_mysql(connection.dialect) and isinstance(key.type, sa.String):
        return mysql.exactly_one_of(key, values)
    return one_of(key, values, connection)


def _delete(connection, bound, chunk, keys, secret, applied) -> None:
    table = bound.table
    key_col = table.c[bound.target.key]
    if bound.target.suppress:
        query = sa.select(key_col, *(table.c[c] for c in bound.target.suppress)).where(
            _named(key_col, chunk, connection)
        )
        for key, *values in connection.execute(query).all():
            subject = _subject_of(keys, key)
            for value in values:
                if value is not None:
                    applied.suppressed.append(
                        (subject, value_hash(secret, str(value)), bound.activity)
                    )
    where = _named(key_col, chunk, connection)
    if not connection.dialect.delete_returning:
        # MySQL has no DELETE ... RETURNING (MariaDB has): the rows are counted under a
        # lock first, so none comes or goes between the count and the DELETE
        counted = sa.select(key_col).where(where).with_for_update()
        deleted = [key for (key,) in connection.execute(counted)]
        connection.execute(sa.delete(table).where(where))
    else:
        deleted = [
            key
            for (key,) in connection.execute(sa.delete(table).where(where).returning(key_col)).all()
        ]
    for key in deleted:
        applied.rows[(_subject_of(keys, key), bound.activity, bound.name)] += 1


def _anonymise(connection, bound, chunk, keys, secret, applied) -> None:
    table = bound.table
    key_col = table.c[bound.target.key]
    pk = [table.c[c] for c in bound.primary_key]
    columns = list(bound.target.columns)
    selected = [*pk, key_col, *(table.c[c] for c in columns if c not in bound.primary_key)]
    query = sa.select(*dict.fromkeys(selected)).where(_named(key_col, chunk, connection))
    changes: list[dict[str, Any]] = []
    for row in connection.execute(query).mappings():
        subject = _subject_of(keys, row[bound.target.key])
        applied.rows[(subject, bound.activity, bound.name)] += 1
        if bound.target.suppress:
            for name in bound.target.suppress:
                # an interrupted sweep's output is no address: its receipt kept the real hash
                if row[name] is not None and not is_anonymised(row[name]):
                    applied.suppressed.append(
                        (subject, value_hash(secret, str(row[name])), bound.activity)
                    )
        constants = bound.target.constants
        new = {
            c: apply(s, row[c], Context(secret, subject, bound.facts[c], constants.get(c)))
            for c, s in bound.target.strategies.items()
        }
        # An earlier, interrupted sweep may have done this row already.
        if any(new[c] != row[c] for c in columns):
            changes.append({**{f"pk_{c.name}": row[c.name] for c in pk}, **new})
    if changes:
        _update_rows(connection, bound, columns, changes)


def _anonymise_in_sql(connection, bound, chunk, keys, secret, applied) -> None:
    # No read before the write: PostgreSQL computes every value (worker/shop/sql_strategies.py).
    rows = json.dumps([{"k": key, "s": keys[key]} for key in chunk])
    counted = applied.rows
    # rows fetched at once, not one round of the result machinery per row
    params = {"rows": rows, "keys": chunk}
    for (subject,) in connection.execute(bound.sql_update(secret), params).all():
        counted[(subject, bound.activity, bound.name)] += 1


def _update_rows(connection, bound, columns: list[str], changes: list[dict[str, Any]]) -> None:
    table = bound.table
    pk = [table.c[c] for c in bound.primary_key]
    if connection.dialect.name == "postgresql":
        # One UPDATE ... FROM unnest(arrays) per chunk: one round trip, and a
        # statement text that stays the same from chunk to chunk.
        statement, aliases = _unnest_update(connection.dialect, table, bound.primary_key, columns)
        names = [f"pk_{c.name}" for c in pk] + columns
        connection.execute(
            statement,
            {alias: [ch[n] for ch in changes] for alias, n in zip(aliases, names, strict=True)},
        )
        return
    if mysql.is_mysql(connection.dialect):
        sql, params = mysql.joined_update(
            connection.dialect, table, bound.primary_key, columns, changes
        )
        connection.exec_driver_sql(sql, params)
        return
    statement = (
        sa.update(table)
        .where(*(c == sa.bindparam(f"pk_{c.name}") for c in pk))
        .values({c: sa.bindparam(c) for c in columns})
    )
    connection.execute(statement, changes)


_unnest_cache: dict[tuple, tuple[sa.TextClause, list[str]]] = {}


def _unnest_update(
    dialect: Any, table: sa.Table, pk: tuple[str, ...], columns: list[str]
) -> tuple[sa.TextClause, list[str]]:
    # Named by what the statement says, not by id(table): every sweep reflects new Table
    # objects, and a freed one's id can come back for another table.
    ident = (
        table.fullname,
        pk,
        tuple(columns),
        tuple(str(table.c[name].type) for name in (*pk, *columns)),
    )
    if ident not in _unnest_cache:
        quote = dialect.identifier_preparer.quote
        keys = [(f"k{i}", table.c[name]) for i, name in enumerate(pk)]
        values = [(f"v{i}", table.c[name]) for i, name in enumerate(columns)]
        arrays = ", ".join(
            f"CAST(:{alias} AS {column.type.compile(dialect=dialect)}[])"
            for alias, column in keys + values
        )
        sql = (
            f"UPDATE {dialect.identifier_preparer.format_table(table)} AS t SET "
            + ", ".join(f"{quote(column.name)} = u.{alias}" for alias, column in values)
            + f" FROM unnest({arrays}) AS u({', '.join(a for a, _ in keys + values)}) WHERE "
            + " AND ".join(f"t.{quote(column.name)} = u.{alias}" for alias, column in keys)
        )
        _unnest_cache[ident] = (sa.text(sql), [a for a, _ in keys + values])
    return _unnest_cache[ident]


def _count(connection, bound, chunk, keys, applied) -> None:
    key_col = bound.table.c[bound.target.key]
    query = (
        sa.select(key_col, sa.func.count())
        .where(_named(key_col, chunk, connection))
        .group_by(key_col)
    )
    for key, rows in connection.execute(query).all():
        applied.rows[(_subject_of(keys, key), bound.activity, bound.name)] += rows


def count_rows(
    connection: Connection, work: Sequence[tuple[str, BoundTarget]], removed: RemovedRows
) -> dict[tuple[str, str], int]:
    """Rows each (activity, target) would touch for these subjects (the dry run's numbers):
    the steps `apply_targets` would take, counted instead of applied; `removed` carries what
    earlier batches of the same dry run would have deleted."""
    applied = Applied()
    totals: dict[tuple[str, str], int] = {}
    for step in plan_steps(work, removed):
        totals.setdefault((step.bound.activity, step.bound.name), 0)
        for chunk in chunks(step.keys, ONE_OF_CHUNK):
            _count(connection, step.bound, chunk, step.keys, applied)
    for (_, activity, target), rows in applied.rows.items():
        totals[(activity, target)] += rows
    return totals


def table_sizes(connection: Connection, tables: Iterable[sa.Table]) -> dict[str, int]:
    return {
        t.name: connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
        for t in tables
    }
