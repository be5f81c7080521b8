"""Reading a register source's rows from the shop: checked against the real schema, then
streamed in keyset order, one batch per query, so a million rows hold one batch in memory.

A `table` source is read by its primary key; a `query` source by (`at`, the columns its
`id` names), the query wrapped as a subquery. Names from the register reach SQL only
through SQLAlchemy's quoting, once reflection confirmed them; `where` and `query` are
the DPO's SQL, checked by preparing them (`lethe shop check`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.domain.register import Register
from worker.domain.register_file import RegisterProblem, register_line
from worker.domain.sources import Source, placeholders
from worker.shop.binding import ShopUnavailable, unreachable

# Rows per query: 2,000 keeps one batch's memory small (a few MB) while the round trips
# stay a small share of the time (`python bench/backfill.py`, bench/README.md).
BATCH_ROWS = 2_000


@dataclass(frozen=True)
class BoundSource:
    """A source whose table (or query) and columns the shop confirmed."""

    index: int  # 1-based, as `lethe backfill --source N` names it
    source: Source
    selectable: Any  # the table, or the query as a subquery
    order: tuple[str, ...]  # the keyset: primary key, or `at` and the id's columns

    @property
    def label(self) -> str:
        return f"#{self.index} {self.source.event} from {self.source.origin}"


def bind_sources(
    register: Register, register_path: str | Path, engine: Engine
) -> tuple[list[BoundSource], list[RegisterProblem]]:
    """Every source checked against the shop schema: the bound ones, and the problems
    (`file:line`: unknown table or column, a `where` or `query` the shop cannot prepare)."""
    shown = str(register_path)
    bound: list[BoundSource] = []
    problems: list[RegisterProblem] = []
    try:
        inspector = sa.inspect(engine)
        tables = set(inspector.get_table_names())
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise ShopUnavailable(unreachable(engine, exc)) from None
    for i, source in enumerate(register.sources):

        def problem(where: tuple, message: str, i: int = i) -> None:
            line = register_line(register_path, ("sources", i, *where))
            problems.append(RegisterProblem(shown, line, message))

        label = f"source {source.event!r} from {source.origin!r}"
        try:
            if source.table is not None:
                one = _bind_table(i + 1, source, engine, tables, problem, label)
            else:
                one = _bind_query(i + 1, source, engine, problem, label)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise ShopUnavailable(unreachable(engine, exc)) from None
        if one is not None:
            bound.append(one)
    return bound, problems


def _bind_table(index, source, engine, tables, problem, label) -> BoundSource | None:
    if source.table not in tables:
        problem(("table",), f"{label}: the shop has no table {source.table!r}")
        return None
    table = sa.Table(source.table, sa.MetaData(), autoload_with=engine)
    order = tuple(c.name for c in table.primary_key.columns)
    if not order:
        problem(
            ("table",),
            f"{label}: table {source.table!r} has no primary key to read it in order: "
            "use query: instead (it is read in `at` order)",
        )
        return None
    if not _columns_known(source, set(table.c.keys()), problem, label, f"table {source.table!r}"):
        return None
    if source.where is not None:
        probe = sa.select(sa.literal(1)).select_from(table).where(sa.text(source.where)).limit(0)
        failure = _prepare(engine, probe)
        if failure:
            problem(("where",), f"{label}: where cannot be prepared by the shop: {failure}")
            return None
    return BoundSource(index, source, table, order)


def _bind_query(index, source, engine, problem, label) -> BoundSource | None:
    text = source.query.strip().rstrip(";")
    try:
        with engine.connect() as connection:
            wrapped = sa.text(f"SELECT * FROM ({text}) AS lethe_source WHERE 1 = 0")
            names = list(connection.execute(wrapped).keys())
    except sa.exc.DBAPIError as exc:
        if isinstance(exc, sa.exc.OperationalError) and _unreachable(exc):
            raise
        problem(("query",), f"{label}: the shop cannot prepare the query: {_reason(exc)}")
        return None
    if not _columns_known(source, set(names), problem, label, "the query's result"):
        return None
    columns = [sa.column(n) for n in names]
    subquery = sa.text(text).columns(*columns).subquery("lethe_source")
    order = (source.at, *[n for n in placeholders(source.id) if n != source.at])
    return BoundSource(index, source, subquery, order)


def _columns_known(source: Source, names: set[str], problem, label: str, what: str) -> bool:
    ok = True
    for where, template in [(("at",), "{" + source.at + "}"), *source.templates()]:
        for name in placeholders(template):
            if name not in names:
                problem(
                    where,
                    f"{label}: {what} has no column {name!r} (it has {', '.join(sorted(names))})",
                )
                ok = False
    return ok


def _prepare(engine: Engine, statement: Any) -> str | None:
    try:
        with engine.connect() as connection:
            connection.execute(statement).fetchall()
    except sa.exc.DBAPIError as exc:
        if isinstance(exc, sa.exc.OperationalError) and _unreachable(exc):
            raise
        return _reason(exc)
    return None


def _unreachable(exc: sa.exc.OperationalError) -> bool:
    # SQLite's and MySQL's syntax errors are OperationalErrors too: only a lost connection
    # is the shop being down
    return bool(exc.connection_invalidated) or "connect" in str(exc.orig).lower()


def _reason(exc: sa.exc.DBAPIError) -> str:
    # the driver's first line names the problem (syntax, unknown column) without rows
    return str(exc.orig).strip().splitlines()[0][:300]


def read_rows(
    engine: Engine, bound: BoundSource, batch: int = BATCH_ROWS
) -> Iterator[dict[str, Any]]:
    """The source's rows (its placeholders and `at`), in keyset order, one query a batch.

    Rows of a `query` source whose `at` is NULL cannot be ordered by it: they are
    yielded first, read in one pass of their own, so the caller counts them skipped.
    """
    source = bound.source
    sel = bound.selectable
    wanted = list(dict.fromkeys([*source.columns(), *bound.order]))
    columns = [sel.c[n] for n in wanted]
    keys = [sel.c[n] for n in bound.order]
    base = sa.select(*columns)
    if source.where is not None:
        base = base.where(sa.text(source.where))
    if source.query is not None:
        nulls = sa.select(*columns).where(sel.c[source.at].is_(None))
        yield from _stream(engine, nulls)
        base = base.where(sel.c[source.at].is_not(None))
    last: tuple | None = None
    while True:
        query = base.order_by(*keys).limit(batch)
        if last is not None:
            query = query.where(after_keys(keys, last))
        with engine.connect() as connection:
            rows = [dict(r) for r in connection.execute(query).mappings()]
        yield from rows
        if len(rows) < batch:
            return
        last = tuple(rows[-1][n] for n in bound.order)


def after_keys(keys: list[Any], last: tuple) -> Any:
    """Rows after `last` in keyset order, spelt out (a > x OR (a = x AND b > y) ...):
    row-value comparison is not in every SQLite a shop may run."""
    clauses = []
    for i, key in enumerate(keys):
        equal = [keys[j] == last[j] for j in range(i)]
        clauses.append(sa.and_(*equal, key > last[i]))
    return sa.or_(*clauses)


def _stream(engine: Engine, query: Any) -> Iterator[dict[str, Any]]:
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
            query
        )
        for row in result.mappings():
            yield dict(row)


def count_source_rows(engine: Engine, bound: BoundSource) -> int:
    """How many rows the source reads (its `where` applied): the progress bar's length."""
    query = sa.select(sa.func.count()).select_from(bound.selectable)
    if bound.source.where is not None:
        query = query.where(sa.text(bound.source.where))
    try:
        with engine.connect() as connection:
            return connection.execute(query).scalar_one()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise ShopUnavailable(unreachable(engine, exc)) from None
