"""Anonymisation strategies: idempotent, fitting their column, refused where they cannot fit."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.domain.strategies import (
    REDACTED,
    STRATEGIES,
    ColumnFacts,
    Context,
    StrategyError,
    apply,
    column_problem,
)

SECRET = b"test-secret-0123456789"
TEXT = ColumnFacts("email", "text", length=254, nullable=False, unique=True)


def ctx(column: ColumnFacts = TEXT, subject: str = "customer:42") -> Context:
    return Context(SECRET, subject, column)


VALUES = {
    "text": st.text(min_size=1, max_size=60),
    "integer": st.integers(min_value=-(10**9), max_value=10**9),
    "numeric": st.decimals(min_value=-(10**6), max_value=10**7, places=2, allow_nan=False),
    "date": st.dates(),
    "datetime": st.datetimes(),
}
COLUMNS = {
    "text": ColumnFacts("c", "text", length=254),
    "integer": ColumnFacts("c", "integer"),
    "numeric": ColumnFacts("c", "numeric"),
    "date": ColumnFacts("c", "date"),
    "datetime": ColumnFacts("c", "datetime"),
}
FITS = [
    ("null", "text"),
    ("redact", "text"),
    ("random_email", "text"),
    ("keyed_hash", "text"),
    ("pseudonym", "text"),
    ("department", "text"),
    ("year", "date"),
    ("year", "datetime"),
    ("amount_range", "integer"),
    ("amount_range", "numeric"),
]


@pytest.mark.parametrize(("name", "kind"), FITS)
@given(data=st.data())
def test_every_strategy_is_idempotent_so_an_interrupted_sweep_can_run_again(name, kind, data):
    value = data.draw(VALUES[kind])
    column = COLUMNS[kind]
    once = apply(name, value, ctx(column))
    assert apply(name, once, ctx(column)) == once


def test_keyed_hash_keeps_distinct_values_distinct_and_fits_the_column():
    short = ColumnFacts("login", "text", length=30, unique=True)
    a = apply("keyed_hash", "jeanne@example.org", ctx(short))
    b = apply("keyed_hash", "louis@example.org", ctx(short))
    assert a != b and a.startswith("h:") and len(a) == 30
    assert "jeanne" not in a


def test_keyed_hash_depends_on_the_secret():
    other = Context(b"another-secret-987654", "customer:42", TEXT)
    assert apply("keyed_hash", "x@example.org", ctx()) != apply(
        "keyed_hash", "x@example.org", other
    )


def test_a_pseudonym_is_stable_per_subject_across_tables():
    first = ColumnFacts("first_name", "text", length=100)
    ship = ColumnFacts("ship_name", "text", length=200)
    assert apply("pseudonym", "Jeanne", ctx(first)) == apply("pseudonym", "J. Martin", ctx(ship))
    assert apply("pseudonym", "Jeanne", ctx(first)) != apply(
        "pseudonym", "Jeanne", ctx(first, "customer:43")
    )


@pytest.mark.parametrize(
    ("postcode", "department"),
    [
        ("75008", "75"),
        ("20090", "2A"),
        ("20200", "2B"),
        ("97110", "971"),
        ("2A", "2A"),
        (None, None),
    ],
)
def test_a_postcode_becomes_its_department(postcode, department):
    assert (
        apply("department", postcode, ctx(ColumnFacts("postcode", "text", length=10))) == department
    )


@pytest.mark.parametrize(
    ("amount", "low"),
    [
        (Decimal("12.50"), 0),
        (Decimal("149.48"), 100),
        (Decimal("250"), 250),
        (Decimal("99999"), 50_000),
    ],
)
def test_an_amount_becomes_the_lower_bound_of_its_range(amount, low):
    assert apply("amount_range", amount, ctx(ColumnFacts("total", "numeric"))) == Decimal(low)


def test_an_amount_in_a_text_column_becomes_the_range_itself():
    assert (
        apply("amount_range", "149.48", ctx(ColumnFacts("total", "text", length=20))) == "100-250"
    )


def test_a_date_becomes_its_year():
    assert apply("year", date(1985, 6, 12), ctx(COLUMNS["date"])) == date(1985, 1, 1)
    assert apply("year", datetime(2020, 5, 3, 10, 5), ctx(COLUMNS["datetime"])) == datetime(
        2020, 1, 1
    )


def test_a_moment_with_its_zone_keeps_the_year_it_had_in_the_registers_zone():
    aware = ColumnFacts("last_login_at", "datetime", zone="Europe/Paris")
    # 1 January 2021 at 00:30 in Paris, as a database in UTC reads it back
    read = datetime(2020, 12, 31, 23, 30, tzinfo=UTC)
    paris = ZoneInfo("Europe/Paris")
    assert apply("year", read, ctx(aware)) == datetime(2021, 1, 1, tzinfo=paris)
    assert apply("year", datetime(2021, 1, 1, tzinfo=paris), ctx(aware)) == datetime(
        2021, 1, 1, tzinfo=paris
    )  # written once, the same again


def test_a_char_value_is_hashed_without_its_blank_padding():
    # PostgreSQL reads CHAR(80) padded, SQLite as stored: one address, one hash
    char = ColumnFacts("code", "text", 80, padded=True)
    once = apply("keyed_hash", "jeanne@example.org".ljust(80), ctx(char))
    assert once == apply("keyed_hash", "jeanne@example.org", ctx(char))
    assert apply("keyed_hash", once.ljust(80), ctx(char)) == once  # the row swept again


def test_redact_writes_one_fixed_token():
    assert apply("redact", "Martin", ctx(ColumnFacts("last_name", "text", length=100))) == REDACTED


@pytest.mark.parametrize(
    ("strategy", "column", "expected"),
    [
        ("null", ColumnFacts("email", "text", 254, nullable=False), "is NOT NULL"),
        ("redact", ColumnFacts("email", "text", 254, unique=True), "is UNIQUE"),
        ("year", ColumnFacts("day", "date", unique=True), "is UNIQUE"),
        ("redact", ColumnFacts("postcode", "text", 5), "holds 5 characters"),
        ("keyed_hash", ColumnFacts("code", "text", 8), "holds 8 characters"),
        ("keyed_hash", ColumnFacts("age", "integer"), "is of type integer"),
        ("year", ColumnFacts("name", "text", 100), "is of type text"),
        ("redact", ColumnFacts("id", "text", 20, primary_key=True), "primary key"),
        ("redact", ColumnFacts("customer_id", "text", 20, foreign_key=True), "foreign key"),
        ("shred", ColumnFacts("email", "text", 254), "unknown strategy 'shred'"),
    ],
)
def test_a_strategy_that_cannot_fit_its_column_is_refused_before_any_sweep(
    strategy, column, expected
):
    assert expected in (column_problem(strategy, column, one_row_per_subject=True) or "")


@pytest.mark.parametrize(
    ("strategy", "column", "remedy"),
    [
        ("null", ColumnFacts("born", "date", nullable=False), "use year instead"),
        ("amount_range", ColumnFacts("points", "integer", unique=True), "use null instead"),
        (
            "redact",
            ColumnFacts("login", "text", 254, nullable=False, unique=True),
            "use random or random_email instead",
        ),
        ("null", ColumnFacts("token", "other", nullable=False), "no strategy fits this column"),
    ],
)
def test_a_refusal_names_only_strategies_that_fit_the_column(strategy, column, remedy):
    # "use redact" for a NOT NULL date would only be refused in turn
    assert remedy in column_problem(strategy, column, one_row_per_subject=True)


def test_a_pseudonym_in_a_unique_column_needs_one_row_per_subject():
    login = ColumnFacts("login", "text", 254, unique=True)
    assert column_problem("pseudonym", login, one_row_per_subject=True) is None
    assert "several rows" in column_problem("pseudonym", login, one_row_per_subject=False)


def test_a_pseudonym_in_a_unique_column_is_never_cut_short():
    # cut to 8 hex digits, two people of some 150,000 already share one: the second's
    # erasure would break the constraint at every sweep (the pair found by trying every
    # customer id from 0 under this secret's pseudonym key)
    short = ColumnFacts("login", "text", 13, unique=True)
    secret = b"a-fixed-secret-of-32-characters!"
    shared = {
        apply("pseudonym", "x", Context(secret, f"customer:{n}", short)) for n in (10938, 141764)
    }
    assert len(shared) == 1
    for length in (13, 16):
        login = ColumnFacts("login", "text", length, unique=True)
        assert "widen it to 17" in column_problem("pseudonym", login, one_row_per_subject=True)
    login = ColumnFacts("login", "text", 17, unique=True)
    assert column_problem("pseudonym", login, one_row_per_subject=True) is None
    assert column_problem("pseudonym", ColumnFacts("name", "text", 13), True) is None


def test_every_registered_strategy_says_which_columns_it_accepts():
    from worker.domain.strategies import ACCEPTS

    assert set(ACCEPTS) == set(STRATEGIES)


@pytest.mark.parametrize("value", ["12,50", "€12", "douze"])
def test_amount_range_refuses_an_amount_it_cannot_read_as_this_rows_failure(value):
    # a StrategyError fails this subject alone; anything else would stop every sweep
    with pytest.raises(StrategyError, match="amount_range expects"):
        apply("amount_range", value, ctx(TEXT))


@pytest.mark.parametrize(
    ("kind", "widest", "lowest"),
    [("numeric", Decimal(100_000), Decimal(-100_000)), ("text", "100000-", "-100000-0")],
)
def test_a_nan_amount_stays_and_an_infinite_one_takes_the_widest_range(kind, widest, lowest):
    # numeric and real columns hold them: a refusal would fail that person at every sweep
    column = ColumnFacts("total", kind, length=20 if kind == "text" else None)
    assert apply("amount_range", Decimal("NaN"), ctx(column)).is_nan()
    assert math.isnan(apply("amount_range", float("nan"), ctx(column)))
    assert apply("amount_range", Decimal("Infinity"), ctx(column)) == widest
    assert apply("amount_range", float("-inf"), ctx(column)) == lowest


@pytest.mark.parametrize("amount", ["-75", "-0.5", "-250000", "60000", "12.50"])
def test_an_amount_range_in_a_text_column_is_left_alone_when_swept_again(amount):
    # a person who comes back is swept again over the row already anonymised
    column = ColumnFacts("total", "text", length=20)
    once = apply("amount_range", amount, ctx(column))
    assert apply("amount_range", once, ctx(column)) == once


def test_a_text_column_too_short_for_the_widest_range_is_refused():
    widest = apply("amount_range", "60000", ctx(ColumnFacts("total", "text", length=20)))
    assert widest == "50000-100000"
    short = ColumnFacts("total", "text", length=len(widest) - 1)
    assert "holds 11 characters" in column_problem("amount_range", short, True)
    assert column_problem("amount_range", ColumnFacts("total", "text", len(widest)), True) is None
