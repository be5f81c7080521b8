"""The strategies' PostgreSQL expressions write exactly what their Python functions write.

A sweep on a PostgreSQL shop computes values in SQL (worker/shop/sql_strategies.py),
on SQLite in Python (worker/domain/strategies.py): a person anonymised by one must look
the same as by the other, keyed hashes and pseudonyms included. Every value
here goes through both, on a real PostgreSQL, and the results are compared. The
random strategies cannot agree value by value: their forms are compared instead
(the same alphabet and length, a new value for every row, an erased address left),
and how SQL spells the uuid it draws is compared letter by letter.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from worker.domain.strategies import MIN_LENGTH, RANDOM_ALPHABET, ColumnFacts, Context, apply
from worker.shop.constraints import operable_domains
from worker.shop.sql_strategies import SQL_STRATEGIES, HmacKey, SqlContext, sql_form, uuid_letters

SHORT_SECRET = b"a secret of thirty-two bytes...!"
LONG_SECRET = b"k" * 100  # longer than SHA-256's block: HMAC hashes the key first

TEXTS = [
    None,
    "",
    "jeanne.martin@example.org",
    "Jéanne Ünïcode straße 東京",
    "h:0123456789abcdef",  # already a keyed hash: left as it is
    "H:0123456789ABCDEF",  # no keyed hash (upper case), though citext's ~ ignores case
    "h:XYZ",
    "h:",
    "abcdefghijklmnopabcdefghijklmnop@erased.invalid",  # random_email leaves it
    "75008",
    "  75008 ",
    "\t33000\n",
    "20090",
    "20190",
    "20200",
    "97110",
    "98000",
    "2a",
    "2B",
    "971",
    "75",
    "7",
    "123456",
    "SW1A 1AA",
    "sw1a",
    " a",
    "é5000",
    "ß",
    "0",
]
INTEGERS = [None, 0, 1, 49, 50, 99, 100, 2_499, 2_500, 99_999, 100_000, 250_000, -1, -75, -100_000]
NUMERICS = [None, "0", "49.99", "50.00", "1234.56", "-0.01", "-75.50", "99999999.99", "NaN"]
NO_NUMBERS = ["NaN", "Infinity", "-Infinity"]  # what numeric and real columns hold besides
DATES = [None, date(2021, 6, 15), date(2000, 1, 1), date(1999, 12, 31), date(2024, 2, 29)]
PARIS_WINTER = timezone(timedelta(hours=1))
MOMENTS = [
    None,
    datetime(2021, 6, 15, 10, 30, tzinfo=UTC),
    datetime(2021, 1, 1, 0, 30, tzinfo=PARIS_WINTER),  # 2020 in UTC
    datetime(2020, 12, 31, 23, 30, tzinfo=UTC),
]

COLUMNS = {
    # column: (SQL type, kind, length, values)
    "t_free": ("text", "text", None, TEXTS),
    "t_40": ("varchar(40)", "text", 40, TEXTS),
    "t_18": ("varchar(18)", "text", 18, TEXTS),
    "t_13": ("varchar(13)", "text", 13, TEXTS),
    "t_ci": ("citext", "text", None, TEXTS),
    # CHAR(n) reads come back blank-padded
    "c_20": ("char(20)", "text", 20, TEXTS),
    "c_80": ("char(80)", "text", 80, TEXTS),
    "i": ("integer", "integer", None, INTEGERS),
    "n": ("numeric(10,2)", "numeric", None, NUMERICS),
    "n_free": ("numeric", "numeric", None, [*NUMERICS, *NO_NUMBERS]),
    "r": ("real", "numeric", None, [None, 0.0, 49.5, -75.5, 1e12, *NO_NUMBERS]),
    "d": ("date", "date", None, DATES),
    "ts": ("timestamptz", "datetime", None, MOMENTS),
    "tn": ("timestamp", "datetime", None, [None, datetime(2021, 1, 1), datetime(1999, 7, 4, 5)]),
    # PostgreSQL domains: the SQL forms that cast (year, amount_range) cast to the domain
    "dom_t": ("lethe_mail", "text", 40, TEXTS),
    "dom_n": ("lethe_amount", "numeric", None, NUMERICS),
    "dom_d": ("lethe_day", "date", None, DATES),
}
DOMAINS = [
    "CREATE DOMAIN lethe_mail AS varchar(40)",
    "CREATE DOMAIN lethe_amount AS numeric(10,2)",
    "CREATE DOMAIN lethe_day AS date",
]
SUBJECTS = ["customer:42", "visitor:n-7", "ambassador:é"]


@pytest.fixture(scope="module")
def values_table(postgres_server: str) -> Any:
    """One table per column kind, filled with the values above; rows read back as psycopg
    returns them (so Python sees what a sweep would read)."""
    name = f"lethe_sqlstrat_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        # A linguistic default collation, as a shop's database often has: there upper()
        # maps é and ß, and 'a' < 'B'. Expressions that lean on the "C" collation must
        # say so themselves; under a C-like default their mistakes would go unseen.
        connection.execute(
            sa.text(
                f'CREATE DATABASE "{name}" TEMPLATE template0 '
                "LOCALE_PROVIDER icu ICU_LOCALE 'fr-FR'"
            )
        )
    url = f"{postgres_server.rsplit('/', 1)[0]}/{name}"
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS citext"))
        for domain in DOMAINS:
            connection.execute(sa.text(domain))
        for column, (sql_type, _, length, values) in COLUMNS.items():
            values = [v for v in values if length is None or v is None or len(v) <= length]
            connection.execute(
                sa.text(f"CREATE TABLE v_{column} (id int PRIMARY KEY, subject text, v {sql_type})")
            )
            connection.execute(
                sa.text(f"INSERT INTO v_{column} VALUES (:id, :subject, :v)"),
                [
                    {"id": i, "subject": SUBJECTS[i % len(SUBJECTS)], "v": value}
                    for i, value in enumerate(values)
                ],
            )
    metadata.reflect(engine)
    for table in metadata.tables.values():
        operable_domains(table)  # as bind_targets types a domain column for the sweep
    yield engine, metadata
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


RANDOM = {"random", "random_email"}
CASES = [
    (strategy, column)
    for strategy, (_, kinds) in SQL_STRATEGIES.items()
    for column, (_, kind, _, _) in COLUMNS.items()
    if kind in kinds and strategy not in RANDOM
]
# where the strategy fits (worker/domain/strategies.py refuses random_email in 13 characters)
RANDOM_CASES = [
    (strategy, column)
    for strategy in sorted(RANDOM)
    for column, (_, kind, length, _) in COLUMNS.items()
    if kind in SQL_STRATEGIES[strategy][1] and (length or 100) >= MIN_LENGTH.get(strategy, 0)
]
RANDOM_IDS = [f"{s}-{c}" for s, c in RANDOM_CASES]


# a domain column's expressions must not lean on what SQLAlchemy 2.1 deprecates (DOMAIN
# declares no operator classes; shop_constraints.OperableDomain does)
@pytest.mark.filterwarnings("error::sqlalchemy.exc.SADeprecationWarning")
@pytest.mark.parametrize("unique", [False, True], ids=["", "unique"])
@pytest.mark.parametrize("secret", [SHORT_SECRET, LONG_SECRET], ids=["short-key", "long-key"])
@pytest.mark.parametrize(("strategy", "column"), CASES, ids=[f"{s}-{c}" for s, c in CASES])
def test_sql_and_python_write_the_same_value(
    values_table: Any, strategy: str, column: str, secret: bytes, unique: bool
) -> None:
    engine, metadata = values_table
    table = metadata.tables[f"v_{column}"]
    sql_type, kind, length, _ = COLUMNS[column]
    # UNIQUE changes what keyed_hash hashes (the subject too)
    padded = sql_type.startswith("char(")
    # a timestamptz's years begin in the register's zone, not the session's
    zone = "Europe/Paris" if sql_type == "timestamptz" else None
    facts = ColumnFacts(name="v", kind=kind, length=length, unique=unique, padded=padded, zone=zone)
    form = sql_form(strategy, facts)
    assert form is not None
    ctx = SqlContext(HmacKey.of(secret), table.c.subject, facts, "Anonymous")
    query = sa.select(table.c.id, table.c.subject, table.c.v, form(table.c.v, ctx)).order_by(
        table.c.id
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    assert rows, "no values to compare"
    for _, subject, value, in_sql in rows:
        in_python = apply(strategy, value, Context(secret, subject, facts, "Anonymous"))
        assert _same(in_sql, in_python), (strategy, column, value)
        # read back from CHAR(n), a value comes with its padding
        stored = in_python.ljust(length) if padded and in_python is not None else in_python
        again = apply(strategy, stored, Context(secret, subject, facts, "Anonymous"))
        assert _same(again, in_python)


def _shape(value: str | None) -> str | None:
    """A random value with its letters masked: what SQL and Python must agree on."""
    return None if value is None else re.sub("[a-p]", "x", value.rstrip(" "))


@pytest.mark.parametrize(("strategy", "column"), RANDOM_CASES, ids=RANDOM_IDS)
def test_sql_and_python_write_random_values_of_the_same_form(
    values_table: Any, strategy: str, column: str
) -> None:
    engine, metadata = values_table
    table = metadata.tables[f"v_{column}"]
    sql_type, kind, length, _ = COLUMNS[column]
    facts = ColumnFacts(
        name="v", kind=kind, length=length, unique=True, padded=sql_type.startswith("char(")
    )
    ctx = SqlContext(HmacKey.of(SHORT_SECRET), table.c.subject, facts)
    query = sa.select(table.c.subject, table.c.v, sql_form(strategy, facts)(table.c.v, ctx))
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(table.c.id)).all()
    drawn = []
    for subject, value, in_sql in rows:
        in_python = apply(strategy, value, Context(SHORT_SECRET, subject, facts))
        assert _shape(in_sql) == _shape(in_python), (strategy, column, value)
        if value is not None and in_python != value:
            drawn.append(in_sql)
    # a new value for every row, none of them the original
    assert drawn and len(set(drawn)) == len(drawn)


def test_sql_spells_each_hex_digit_of_a_uuid_as_its_letter(values_table: Any) -> None:
    engine, _ = values_table
    drawn = [
        uuid.UUID(int=0),
        uuid.UUID(int=2**128 - 1),
        uuid.UUID("0123456789abcdef" * 2),
        uuid.UUID("fedcba9876543210" * 2),
        *(uuid.uuid4() for _ in range(50)),
    ]
    values = sa.values(sa.column("u", sa.Uuid), name="drawn").data([(u,) for u in drawn])
    query = sa.select(values.c.u, uuid_letters(values.c.u, 32), uuid_letters(values.c.u, 12))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    assert len(rows) == len(drawn)
    for drawn_uuid, letters, first in rows:
        spelt = "".join(RANDOM_ALPHABET[int(digit, 16)] for digit in drawn_uuid.hex)
        assert (letters, first) == (spelt, spelt[:12]), drawn_uuid


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (NaN is equal to nothing, itself included)."""
    return a == b or (a != a and b != b)


def test_every_strategy_with_a_sql_form_is_compared() -> None:
    compared = {strategy for strategy, _ in CASES + RANDOM_CASES}
    assert compared == set(SQL_STRATEGIES)
