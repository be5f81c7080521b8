"""The shop adapter's binding: the register's targets checked against the shop's real schema.

Every table and column comes from SQLAlchemy reflection of the shop database,
so a name from the register reaches SQL only once the shop has confirmed it,
and always quoted by SQLAlchemy. The strategies themselves are pure
(worker/domain/strategies.py); this module reads rows, calls them and writes back,
or, on a PostgreSQL shop, lets one UPDATE compute the same values in SQL
(worker/shop/sql_strategies.py) without reading the rows first.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine

from worker.domain.linkability import linked_until
from worker.domain.patterns import pattern_problem
from worker.domain.register import Register, Target
from worker.domain.register_file import RegisterProblem, register_line
from worker.domain.strategies import ColumnFacts, column_problem
from worker.logs import log
from worker.settings import safe_url, sqlite_file
from worker.shop import mysql
from worker.shop.columns import column_facts, referenced_without_cascade
from worker.shop.constraints import (
    Check,
    Domain,
    broken_checks,
    check_constraints,
    column_domains,
    operable_domains,
    unique_sets,
)
from worker.shop.sql_strategies import HmacKey, SqlContext, sql_form
from worker.shop.triggers import TRIGGER_REMEDY, FiredTriggers, table_triggers
from worker.store.sessions import POSTGRES_CONNECT_ARGS


class ShopUnavailable(RuntimeError):
    """The shop database cannot be reached; due lifecycles stay due until the next sweep."""


class ShopMismatch(RuntimeError):
    """The register's targets do not fit the shop schema; `problems` says where."""

    def __init__(self, problems: list[RegisterProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class BoundTarget:
    """A target whose table and columns the shop schema confirmed."""

    activity: str
    target: Target
    table: sa.Table
    facts: dict[str, ColumnFacts]
    primary_key: tuple[str, ...]
    # the shop's triggers on the table that this target's write fires (warned, not refused)
    triggers: tuple[str, ...] = ()
    # the activities whose kept rows link this anonymised target's rows back to their
    # subject until they end (worker/domain/linkability.py), named in its audit rows
    linked_until: str | None = None
    # the set-based UPDATE per secret, built once (sql_update)
    _sql: dict[bytes, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def name(self) -> str:
        return self.target.name

    @cached_property
    def audit_text(self) -> tuple[str, str]:
        """(columns, strategy) as the audit row writes them."""
        from worker.domain.strategies import strategy_text

        columns, strategy = strategy_text(self.target)
        if self.linked_until:
            strategy += f"; pseudonymous until {self.linked_until} ends"
        return columns, strategy

    def sql_update(self, secret: bytes) -> Any | None:
        """One `UPDATE ... FROM json_to_recordset(:rows) ... AND key = ANY(:keys)` that
        applies every strategy of this target in PostgreSQL, RETURNING each row's subject;
        None when a strategy (or its suppression list) needs Python. `rows` are the batch's
        keys with their subjects (JSON), `keys` the same keys (a list)."""
        if secret not in self._sql:
            self._sql[secret] = self._build_sql_update(secret)
        return self._sql[secret]

    def _build_sql_update(self, secret: bytes) -> Any | None:
        forms = {c: sql_form(s, self.facts[c]) for c, s in self.target.strategies.items()}
        if self.target.suppress or not forms or None in forms.values():
            return None
        table = self.table
        key = table.c[self.target.key]
        if isinstance(key.type, sa.types.NullType):
            return None  # a key type SQLAlchemy does not know cannot be declared in SQL
        batch = (
            sa.func.json_to_recordset(sa.cast(sa.bindparam("rows"), sa.JSON))
            .table_valued(sa.column("k", key.type), sa.column("s", sa.Text))
            .render_derived(name="batch", with_types=True)
        )
        hmac_key = HmacKey.of(secret)
        values = {
            name: form(
                table.c[name],
                SqlContext(hmac_key, batch.c.s, self.facts[name], self.target.constants.get(name)),
            )
            for name, form in forms.items()
        }
        # The keys once more, as an array: the planner cannot see how many rows
        # json_to_recordset gives (it assumes 100), and on a table of up to some tens of
        # thousands of rows it read all of them for each batch (a hash join); with
        # `= ANY(:keys)` it reads only the batch's, by the key's index. Of the key's own
        # type, so that its `=` is the join's: the same rows either way.
        keys = sa.bindparam("keys", type_=ARRAY(key.type))
        return (
            sa.update(table)
            .where(key == batch.c.k, key == sa.any_(keys))
            .values(values)
            .returning(batch.c.s)
        )

    def key_for(self, subject: str) -> Any:
        """The key column's value naming `subject`, or None when no row can have it."""
        value = subject if self.target.key_value == "subject" else subject.split(":", 1)[1]
        facts = self.facts[self.target.key]
        if facts.kind == "integer":
            # One spelling per row: `customer:042` or `customer:４２` (which int() reads as
            # 42) is another subject, with its own holds, and must not reach row 42.
            if not _CANONICAL_INTEGER.fullmatch(value):
                return None
            number = int(value)
            return number if _fits(number, facts) else None
        if facts.length is not None and len(value) > facts.length:
            return None  # longer than the column holds: no row has it, and a cast would cut it
        return value


_CANONICAL_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def _fits(number: int, facts: ColumnFacts) -> bool:
    bound = 2 ** ((facts.integer_bits or 64) - 1)
    return -bound <= number < bound


def shop_engine(url: str) -> Engine:
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise ShopUnavailable(
            f"the shop database {path} does not exist: set LETHE_SHOP_DATABASE_URL to the "
            "shop's database (`lethe demo` builds a demo shop in $LETHE_HOME/demo/"
            "shop.sqlite3 that it can point at)"
        )
    engine = _engine(url)
    if mysql.is_mysql(engine.dialect) and not engine.url.database:
        # without one, every query fails with "No database selected", which reads as an outage
        raise ShopUnavailable(
            "LETHE_SHOP_DATABASE_URL names a MariaDB/MySQL server but no database: end it "
            "with the shop's database, as in mysql+pymysql://user@host:3306/shop"
        )
    return engine


_engines: dict[str, Engine] = {}


def shop_engine_options(url: str) -> dict[str, Any]:
    """How Lethe connects to a shop database, for the sweep and the outbox relay alike."""
    # hide_parameters: a failed statement's text would quote keys and shop values
    options: dict[str, Any] = {"hide_parameters": True}
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 60}
    else:
        options["pool_pre_ping"] = True
        if url.startswith("postgresql+psycopg"):
            options["connect_args"] = POSTGRES_CONNECT_ARGS
        elif url.startswith(("mysql", "mariadb")):
            options["connect_args"] = mysql.CONNECT_ARGS
            options["pool_recycle"] = mysql.POOL_RECYCLE
    return options


def _engine(url: str) -> Engine:
    if url not in _engines:
        try:
            engine = sa.create_engine(url, **shop_engine_options(url))
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ShopUnavailable(
                f"LETHE_SHOP_DATABASE_URL is not a database URL Lethe can use "
                f"({type(exc).__name__}): give a PostgreSQL, MariaDB/MySQL or SQLite URL such "
                "as postgresql+psycopg://user@host/shop, mysql+pymysql://user@host/shop "
                "(mariadb+pymysql:// too) or sqlite:////srv/shop/shop.sqlite3"
            ) from None
        if mysql.is_mysql(engine.dialect):
            sa.event.listen(engine, "handle_error", mysql.refusal_as_integrity_error)
        _engines[url] = engine
    return _engines[url]


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


def bind_targets(
    register: Register,
    register_path: str | Path,
    engine: Engine,
    secret: bytes,
    *,
    log_triggers: bool = True,
) -> dict[str, list[BoundTarget]]:
    """Every activity's targets, checked against the shop schema; raises ShopMismatch.

    Checks tables, key columns and columns exist, that each strategy's output fits the
    column's type, length, NOT NULL and UNIQUE constraints (a PostgreSQL domain's
    included), and that the table's and the domains' CHECK constraints accept it on a
    few of its rows (worker/shop/constraints.py).

    The shop's triggers that a target's write would fire are only named (BoundTarget.
    triggers, fired_triggers) and, with `log_triggers`, logged as a warning once per
    process: a sweep calls this at every start, `lethe shop check` prints them instead.
    """
    try:
        inspector = sa.inspect(engine)
        tables = set(inspector.get_table_names())
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise ShopUnavailable(unreachable(engine, exc)) from None
    wanted = sorted(
        {
            t.table
            for a in register.activities
            for r in a.retention
            for t in r.targets
            if t.table in tables
        }
    )
    metadata = sa.MetaData()
    metadata.reflect(engine, only=wanted)
    for name in wanted:
        operable_domains(metadata.tables[name])
        if mysql.is_mysql(engine.dialect):
            mysql.utc_timestamps(metadata.tables[name])
    unique = {name: unique_sets(inspector, name) for name in wanted}
    domains = {name: column_domains(inspector, name) for name in wanted}
    checks = {name: check_constraints(inspector, name, domains[name]) for name in wanted}
    triggers = {name: table_triggers(inspector, name) for name in wanted}
    referenced = referenced_without_cascade(inspector, tables, set(wanted))
    problems: list[RegisterProblem] = []
    bound: dict[str, list[BoundTarget]] = {}

    def problem(where: tuple, message: str) -> None:
        problems.append(
            RegisterProblem(str(register_path), register_line(register_path, where), message)
        )

    for a, activity in enumerate(register.activities):
        bound[activity.id] = []
        has_targets = any(rule.targets for rule in activity.retention)
        if not has_targets:
            problem(
                ("activities", a, "retention"),
                f"activity {activity.id!r} has no targets: a sweep would not know where its "
                "data lives in the shop; add targets (table, key, columns)",
            )
        for r, rule in enumerate(activity.retention):
            for t, target in enumerate(rule.targets):
                where = ("activities", a, "retention", r, "targets", t)
                label = f"activity {activity.id!r}, target {target.table!r}"
                if target.table not in tables:
                    problem(
                        (*where, "table"),
                        f"{label}: the shop database has no table {target.table!r} "
                        f"(tables: {', '.join(sorted(tables)) or 'none'})"
                        + (
                            "; only the connection's default schema is read: set the "
                            "schema in LETHE_SHOP_DATABASE_URL (PostgreSQL: "
                            "?options=-csearch_path%3Dcrm) and name the table alone"
                            if "." in target.table
                            else ""
                        ),
                    )
                    continue
                table = metadata.tables[target.table]
                domain = domains[target.table]
                facts = {
                    c.name: column_facts(
                        c,
                        unique[target.table],
                        engine.dialect.name,
                        register.timezone,
                        domain.get(c.name),
                    )
                    for c in table.columns
                }
                columns = [
                    (target.key, "key"),
                    *((c, "columns") for c in target.columns),
                    *((c, "keeps") for c in target.keeps),
                    *((c, "suppress") for c in target.suppress),
                    *((c, "quasi") for c in target.quasi),
                ]
                missing = False
                for column, part in columns:
                    if column not in facts:
                        missing = True
                        path = (*where, part, column) if part == "columns" else (*where, part)
                        problem(
                            path,
                            f"{label}: table {target.table!r} has no column {column!r} "
                            f"(columns: {', '.join(facts)})",
                        )
                if missing:
                    continue
                # the key alone unique on every row: a partial or expression index is not
                one_row = any(u.whole and u.columns == {target.key} for u in unique[target.table])
                fit = True
                for column, strategy in target.strategies.items():
                    constant = target.constants.get(column)
                    why = column_problem(strategy, facts[column], one_row, constant)
                    pattern = target.patterns.get(column)
                    if not why and pattern is not None:
                        why = pattern_problem(strategy, facts[column], pattern, constant)
                    if why:
                        fit = False
                        problem((*where, "columns", column), f"{label}: {why}")
                pk = tuple(c.name for c in table.primary_key.columns)
                if fit and pk and target.columns and not target.delete_rows:
                    for check in _broken(engine, table, target, facts, checks, domains, secret):
                        written = [c for c in target.columns if c in check.columns]
                        problem(
                            (*where, "columns", written[0]),
                            f"{label}: the shop's {check} refuses {', '.join(written)} as the "
                            "strategies leave it (tried on the table's newest rows, or on a "
                            "sample row when it has none), so a sweep would fail those people "
                            "every time: choose strategies whose output the "
                            "constraint accepts, or change the constraint",
                        )
                if target.delete_rows and target.table in referenced:
                    problem(
                        (*where, "delete_rows"),
                        f"{label}: rows of {target.table!r} are referenced by "
                        f"{', '.join(sorted(referenced[target.table]))} without ON DELETE "
                        "CASCADE or SET NULL, so deleting them would fail: anonymise columns "
                        "instead, or delete the referencing rows first",
                    )
                if not pk and not target.delete_rows:
                    problem(
                        (*where, "table"),
                        f"{label}: table {target.table!r} has no primary key, so its rows "
                        "cannot be updated one by one: add one, or use delete_rows",
                    )
                fired = tuple(
                    t.name
                    for t in triggers[target.table]
                    if t.fired_by(write_of(target), target.columns)
                )
                linked = (
                    linked_until(register, activity, target) if rule.then == "anonymise" else None
                )
                bound[activity.id].append(
                    BoundTarget(activity.id, target, table, facts, pk, fired, linked)
                )
    if problems:
        raise ShopMismatch(problems)
    if log_triggers:
        _log_once(fired_triggers(bound))
    return bound


def write_of(target: Target) -> str | None:
    """The statement a target runs on its table's rows: DELETE, UPDATE, or none (a target
    that only keeps columns is counted)."""
    if target.delete_rows:
        return "DELETE"
    return "UPDATE" if target.columns else None


def fired_triggers(bound: dict[str, list[BoundTarget]]) -> list[FiredTriggers]:
    """Per table, the shop's triggers that the sweep's writes would fire, by table name."""
    names: dict[str, dict[str, None]] = defaultdict(dict)
    writes: dict[str, set[str]] = defaultdict(set)
    for target in (t for targets in bound.values() for t in targets if t.triggers):
        names[target.table.name].update(dict.fromkeys(target.triggers))
        writes[target.table.name].add(str(write_of(target.target)))
    return [
        FiredTriggers(
            table, tuple(sorted(names[table])), tuple(sorted(writes[table], reverse=True))
        )
        for table in sorted(names)
    ]


# What this process has logged already: a worker binds at every sweep, and the same
# warning every night would bury the others; a new trigger is a new warning.
_logged: set[FiredTriggers] = set()


def _log_once(fired: list[FiredTriggers]) -> None:
    for found in fired:
        if found in _logged:
            continue
        _logged.add(found)
        # names from the shop's catalog only, never a row's value
        log.warning(
            "a sweep's writes fire the shop's own triggers, which Lethe cannot see into",
            table=found.table,
            triggers=list(found.triggers),
            writes=list(found.writes),
            remedy=TRIGGER_REMEDY,
        )


def _broken(
    engine: Engine,
    table: sa.Table,
    target: Target,
    facts: dict[str, ColumnFacts],
    checks: dict[str, list[Check]],
    domains: dict[str, dict[str, Domain]],
    secret: bytes,
) -> list[Check]:
    try:
        return broken_checks(
            engine,
            table,
            target.key,
            target.strategies,
            facts,
            checks[target.table],
            secret,
            domains[target.table],
            target.constants,
        )
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise ShopUnavailable(unreachable(engine, exc)) from None


def unreachable(engine: Engine, exc: Exception) -> str:
    """Why the shop cannot be reached, what stays as it was, and what to do."""
    return (
        f"the shop database at {safe_url(engine.url.render_as_string(hide_password=True))} "
        f"is unreachable ({type(exc).__name__}); due lifecycles stay due and the next sweep "
        "tries again: start it or fix LETHE_SHOP_DATABASE_URL"
    )
