"""What MariaDB and MySQL hand Lethe that PostgreSQL never does: zero dates (as text),
unique indexes on a column's first characters, and error messages that quote the row."""

from __future__ import annotations

from datetime import date, datetime

import pymysql
import pytest

from worker.domain.strategies import STRATEGIES, ColumnFacts, Context, apply, column_problem
from worker.shop.mysql import mysql_constraint

SECRET = b"test-secret-0123456789"
BIRTHDAY = ColumnFacts("birthday", "date")
INVOICED = ColumnFacts("invoice_date", "datetime", nullable=False)


def _ctx(column: ColumnFacts) -> Context:
    return Context(SECRET, "customer:42", column)


@pytest.mark.parametrize("zero", ["0000-00-00", "0000-00-00 00:00:00", "0000-00-00 00:00:00.000"])
@pytest.mark.parametrize("name", ["year", "redact", "keyed_hash"])
def test_a_zero_date_is_no_date_and_is_left_as_it_is(zero: str, name: str) -> None:
    column = BIRTHDAY if len(zero) == 10 else INVOICED
    assert apply(name, zero, _ctx(column)) == zero
    assert apply("null", zero, _ctx(column)) is None


def test_a_date_with_a_zero_month_or_day_keeps_its_year_only() -> None:
    assert apply("year", "1985-06-00", _ctx(BIRTHDAY)) == date(1985, 1, 1)
    assert apply("year", "1985-00-00", _ctx(BIRTHDAY)) == date(1985, 1, 1)
    assert apply("year", "2021-00-14 10:30:00", _ctx(INVOICED)) == datetime(2021, 1, 1)
    # and what it wrote is a real date, which year leaves alone the next time
    assert apply("year", date(1985, 1, 1), _ctx(BIRTHDAY)) == date(1985, 1, 1)


def test_text_in_a_text_column_that_looks_like_a_zero_date_is_a_text_like_any_other() -> None:
    note = ColumnFacts("note", "text")
    assert apply("redact", "0000-00-00", _ctx(note)) == "[redacted]"


def test_a_unique_prefix_shortens_the_hash_to_stay_unique_within_it() -> None:
    whole = ColumnFacts("token", "text", length=64, unique=True)
    prefixed = ColumnFacts("token", "text", length=64, unique=True, unique_prefix=20)
    hashed = apply("keyed_hash", "tok-0001", _ctx(prefixed))
    assert len(hashed) == 20 and apply("keyed_hash", "tok-0001", _ctx(whole)).startswith(hashed)
    assert column_problem("keyed_hash", prefixed, one_row_per_subject=True) is None


def test_a_unique_prefix_too_short_for_any_unique_output_is_refused_with_the_reason() -> None:
    short = ColumnFacts("token", "text", length=64, unique=True, unique_prefix=12)
    why = column_problem("keyed_hash", short, one_row_per_subject=True)
    assert why is not None and "UNIQUE on its first 12 characters only" in why
    # random letters stay distinct on 12 characters (48 bits); fewer, and they are refused too
    fits = {"null", "random", "random_email"}
    assert all(column_problem(s, short, True) for s in STRATEGIES if s not in fits)
    shorter = ColumnFacts("token", "text", length=64, unique=True, unique_prefix=8)
    assert all(column_problem(s, shorter, True) for s in STRATEGIES if s != "null")


def _error(code: int, message: str) -> pymysql.err.MySQLError:
    kind = pymysql.err.IntegrityError if code in (1062, 1048) else pymysql.err.OperationalError
    return kind(code, message)


@pytest.mark.parametrize(
    ("code", "message", "said"),
    [
        (
            1062,
            "Duplicate entry 'jeanne@example.org' for key 'customer_email'",
            "UNIQUE constraint customer_email",
        ),
        (1062, "Duplicate entry 'x' for key 'ps_customer.email'", "UNIQUE constraint email"),
        # a value shaped to look like the end of the message is not the end
        (1062, "Duplicate entry 'a' for key 'jeanne' for key 'email'", "UNIQUE constraint email"),
        (1048, "Column 'lastname' cannot be null", "NOT NULL constraint lastname"),
        (
            4025,
            "CONSTRAINT `plain_mail` failed for `shop`.`ps_customer`",
            "CHECK constraint plain_mail",
        ),
        (3819, "Check constraint 'email_has_at' is violated.", "CHECK constraint email_has_at"),
        (1406, "Data too long for column 'phone' at row 1", "column phone too short"),
    ],
)
def test_a_mysql_refusal_names_its_constraint_and_never_the_values(
    code: int, message: str, said: str
) -> None:
    assert mysql_constraint(_error(code, message)) == said


def test_a_signal_from_a_trigger_names_nothing() -> None:
    # SIGNAL's MESSAGE_TEXT is the shop's own and may say anything about the row
    assert mysql_constraint(_error(1644, "refused for jeanne@example.org")) is None


def test_a_mysql_url_without_its_database_is_refused_with_the_form_to_use() -> None:
    from worker.shop.binding import ShopUnavailable, shop_engine

    with pytest.raises(ShopUnavailable, match="no database.*mysql\\+pymysql://user@host:3306/shop"):
        shop_engine("mysql+pymysql://root@127.0.0.1:3306")


@pytest.mark.parametrize("url", ["mysql://root@127.0.0.1/shop", "mariadb://root@127.0.0.1/shop"])
def test_a_mysql_url_without_the_driver_lethe_installs_says_which_to_name(url: str) -> None:
    from worker.shop.binding import ShopUnavailable, shop_engine

    with pytest.raises(ShopUnavailable, match="mysql\\+pymysql://.*mariadb\\+pymysql://"):
        shop_engine(url)


@pytest.mark.parametrize(
    "url", ["mysql+pymysql://root@127.0.0.1/shop", "mariadb+pymysql://root@127.0.0.1/shop"]
)
def test_both_spellings_of_a_mariadb_url_make_a_shop_engine(url: str) -> None:
    from worker.shop.binding import shop_engine
    from worker.shop.mysql import is_mysql

    assert is_mysql(shop_engine(url).dialect)  # nothing connects until a query
