"""Every strategy writes the same values whichever database the shop runs on.

The same values go into the same tables on SQLite, PostgreSQL and MariaDB; the
register's targets are bound to each schema and applied by the sweep's own write path
(bind_targets, apply_targets): in Python per row on SQLite and MariaDB, in one SQL
UPDATE on PostgreSQL (worker/shop/sql_strategies.py). The rows read back must agree
column by column: a person anonymised in a PHP shop looks as in a Python one. The
random strategies agree by shape (their letters, their length, `@erased.invalid`), not
by value; the linkable ones (keyed_hash, pseudonym) are only allowed under
`then: pseudonymise`, so they have a rule and a table of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_sql_strategies import DATES, INTEGERS, NUMERICS, PARIS_WINTER, TEXTS

from worker.domain.register_file import load_register
from worker.domain.strategies import ERASED_DOMAIN, LINKABLE, RANDOM_ALPHABET, STRATEGIES
from worker.shop.apply import apply_targets
from worker.shop.binding import bind_targets, dispose_engines, shop_engine

SECRET = b"a secret of thirty-two bytes...!"
MOMENTS = [
    None,
    datetime(2021, 6, 15, 10, 30),
    datetime(2020, 1, 1, 0, 30),  # naive: the shop's wall clock, so still 2020
    datetime(1999, 12, 31, 23, 59, 59),
]

# Moments with a time zone: a PostgreSQL timestamptz, a MariaDB TIMESTAMP (SQLite has none)
INSTANTS = [
    None,
    datetime(2021, 6, 15, 10, 30, tzinfo=UTC),
    datetime(2021, 1, 1, 0, 30, tzinfo=PARIS_WINTER),  # 2020 in UTC, 2021 in Paris
    datetime(2020, 12, 31, 23, 30, tzinfo=UTC),  # 2021 in Paris
]

# table: (column SQL type per database, values, strategies that column kind takes)
TABLES: dict[str, tuple[dict[str, str], list[Any], list[str]]] = {
    "v_text": (
        {"sqlite": "VARCHAR(40)", "postgresql": "varchar(40)", "mysql": "VARCHAR(40)"},
        [t for t in TEXTS if t is None or len(t) <= 40],
        ["null", "redact", "constant", "random", "random_email", "department", "amount_range"],
    ),
    # keyed_hash and pseudonym: under `then: pseudonymise` (the second rule below)
    "v_linked": (
        {"sqlite": "VARCHAR(40)", "postgresql": "varchar(40)", "mysql": "VARCHAR(40)"},
        [t for t in TEXTS if t is None or len(t) <= 40],
        ["keyed_hash", "pseudonym"],
    ),
    "v_int": (
        {"sqlite": "INTEGER", "postgresql": "integer", "mysql": "INT"},
        INTEGERS,
        ["null", "random", "amount_range"],
    ),
    "v_num": (
        {"sqlite": "NUMERIC(12, 2)", "postgresql": "numeric(12,2)", "mysql": "DECIMAL(12,2)"},
        [n for n in NUMERICS if n != "NaN"],  # MariaDB's DECIMAL has no NaN
        ["null", "amount_range"],
    ),
    "v_date": (
        {"sqlite": "DATE", "postgresql": "date", "mysql": "DATE"},
        DATES,
        ["null", "year"],
    ),
    "v_moment": (
        {"sqlite": "DATETIME", "postgresql": "timestamp", "mysql": "DATETIME"},
        MOMENTS,
        ["null", "year"],
    ),
    "v_instant": (
        {"postgresql": "timestamptz", "mysql": "TIMESTAMP NULL"},
        INSTANTS,
        ["null", "year"],
    ),
}
# amount_range on text reads amounts: the other texts are refused, per row, by design
AMOUNT_TEXTS = ["0", "49.99", "1234.56", "-75.50", "100000", None]
CONSTANT = "Anonymous"
# random draws its letters anew on every database: compared by shape, not by value
RANDOM = {"random", "random_email"}
RANDOM_TEXT = re.compile(f"[{RANDOM_ALPHABET}]{{32}}")  # 32 letters fit in VARCHAR(40)
# VARCHAR(40) leaves 25 letters before the domain
RANDOM_EMAIL = re.compile(f"[{RANDOM_ALPHABET}]{{25}}{re.escape(ERASED_DOMAIN)}")

REGISTER = """\
name: strategies everywhere
controller:
  name: Shop
  contact: dpo@shop.example
timezone: Europe/Paris
subject_kinds: [customer]
events:
  order.closed: an order was closed
activities:
  - id: everything
    name: Every strategy
    role: controller
    controller: Shop
    subjects: [customer]
    data: [Identity]
    purposes:
      - purpose: Compare strategies
        legal_basis: contract
    retention:
      - clock: [order.closed]
        keep: 1 day
        then: {then}
        source: test
        targets:
"""


def _column(strategy: str) -> str:
    return f"s_{strategy}"


def _rows(table: str) -> list[dict[str, Any]]:
    _, values, strategies = TABLES[table]
    rows = []
    for i, value in enumerate(values, start=1):
        row: dict[str, Any] = {"id": i}
        for strategy in strategies:
            given = value
            if table == "v_text" and strategy == "amount_range":
                given = AMOUNT_TEXTS[i % len(AMOUNT_TEXTS)]
            row[_column(strategy)] = given
        rows.append(row)
    return rows


def _spec(strategy: str) -> str:
    return f"{{constant: {CONSTANT}}}" if strategy == "constant" else strategy


def _register(folder: Path, dialect: str) -> Path:
    """Two rules: the linkable strategies under `then: pseudonymise`, the others under
    `then: anonymise` (which refuses keyed_hash and pseudonym)."""
    rules = {"anonymise": "", "pseudonymise": ""}
    for table, (types, _, strategies) in TABLES.items():
        if dialect not in types:
            continue
        then = "pseudonymise" if set(strategies) <= LINKABLE else "anonymise"
        columns = ", ".join(f"{_column(s)}: {_spec(s)}" for s in strategies)
        rules[then] += f"          - table: {table}\n            key: id\n"
        rules[then] += f"            columns: {{{columns}}}\n"
    text = REGISTER.replace("{then}", "anonymise") + rules["anonymise"]
    rule = REGISTER[REGISTER.index("      - clock:") :].replace("{then}", "pseudonymise")
    text += rule + rules["pseudonymise"]
    path = folder / f"register-{dialect}.yaml"
    path.write_text(text)
    return path


def _as_stored(row: dict[str, Any], dialect: str) -> dict[str, Any]:
    """pymysql writes a datetime's digits and drops its offset: a TIMESTAMP gets UTC's,
    as the sweep's own session (time_zone +00:00) reads them."""
    if dialect != "mysql":
        return row
    return {
        k: v.astimezone(UTC).replace(tzinfo=None) if getattr(v, "tzinfo", None) else v
        for k, v in row.items()
    }


def _swept(url: str, dialect: str, folder: Path) -> dict[str, dict[int, dict[str, Any]]]:
    register_path = _register(folder, dialect)
    setup = sa.create_engine(url)
    try:
        with setup.begin() as connection:
            for table, (types, _, strategies) in TABLES.items():
                if dialect not in types:
                    continue
                columns = ", ".join(f"{_column(s)} {types[dialect]}" for s in strategies)
                connection.execute(
                    sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {columns})")
                )
                names = ["id", *(_column(s) for s in strategies)]
                connection.execute(
                    sa.text(
                        f"INSERT INTO {table} ({', '.join(names)}) "
                        f"VALUES ({', '.join(':' + n for n in names)})"
                    ),
                    [_as_stored(row, dialect) for row in _rows(table)],
                )
        # the sweep's own engine: on MariaDB its session reads TIMESTAMPs in UTC
        engine = shop_engine(url)
        register = load_register(register_path)
        bound = [
            target
            for targets in bind_targets(register, register_path, engine, SECRET).values()
            for target in targets
        ]
        work = [
            (f"customer:{row['id']}", target)
            for target in bound
            for row in _rows(target.table.name)
        ]
        with engine.begin() as connection:
            apply_targets(connection, work, SECRET)
        found = {}
        with engine.connect() as connection:
            for target in bound:
                query = sa.select(target.table).order_by(target.table.c.id)
                found[target.table.name] = {
                    r["id"]: dict(r) for r in connection.execute(query).mappings()
                }
        return found
    finally:
        setup.dispose()
        dispose_engines()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'shop.sqlite3'}"


def test_every_strategy_writes_the_same_values_on_sqlite_postgresql_and_mariadb(
    tmp_path: Path, sqlite_url: str, postgres_url: str, mariadb_url: str
) -> None:
    swept = {
        "sqlite": _swept(sqlite_url, "sqlite", tmp_path),
        "postgresql": _swept(postgres_url, "postgresql", tmp_path),
        "mariadb": _swept(mariadb_url, "mysql", tmp_path),
    }
    compared = set()
    for table, (_, values, strategies) in TABLES.items():
        expected = swept["postgresql"][table]
        assert len(expected) == len(values)
        for database in ("sqlite", "mariadb"):
            if table not in swept[database]:
                continue
            for i, row in expected.items():
                for strategy in strategies:
                    column = _column(strategy)
                    got = swept[database][table][i][column]
                    if strategy in RANDOM:
                        given = _rows(table)[i - 1][column]
                        for value in (got, row[column]):
                            assert _random_shape(strategy, given, value), (
                                database,
                                table,
                                strategy,
                                given,
                                value,
                            )
                    else:
                        assert got == row[column], (
                            database,
                            table,
                            strategy,
                            _rows(table)[i - 1],
                        )
                    compared.add(strategy)
        # and something was written: the values are not those put in
        changed = [r for r in expected.values() if r != _rows(table)[r["id"] - 1]]
        assert changed, table
    assert compared == set(STRATEGIES)


def _random_shape(strategy: str, given: Any, value: Any) -> bool:
    """What random and random_email write: NULL stays NULL; else random letters a-p (or a
    positive integer), and random_email's end in @erased.invalid."""
    if given is None:
        return value is None
    if isinstance(value, int):
        return strategy == "random" and value > 0
    if not isinstance(value, str):
        return False
    if strategy == "random_email":
        return RANDOM_EMAIL.fullmatch(value) is not None
    return RANDOM_TEXT.fullmatch(value) is not None
