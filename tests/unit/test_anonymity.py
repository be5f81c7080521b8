"""k-anonymity on paper: which rows a target erased, and how they group."""

from __future__ import annotations

from datetime import date

from worker.domain.anonymity import can_tell_erased, is_erased, measure, quasi_identifiers
from worker.domain.register import Target
from worker.domain.strategies import ColumnFacts

TARGET = Target.model_validate(
    {
        "table": "customers",
        "key": "id",
        "columns": {
            "email": "random_email",
            "first_name": {"constant": "Anonymous"},
            "phone": None,
            "birth_date": "year",
            "postcode": "department",
            "password": "random",
        },
        "quasi": ["gender"],
    }
)
FACTS = {
    "email": ColumnFacts("email", "text", 254),
    "first_name": ColumnFacts("first_name", "text", 100),
    "phone": ColumnFacts("phone", "text", 30),
    "birth_date": ColumnFacts("birth_date", "date"),
    "postcode": ColumnFacts("postcode", "text", 10),
    "password": ColumnFacts("password", "text", 200),
}
ERASED = {
    "email": "kdoejflaamnbcdpeokdoejflaamnbcde@erased.invalid",
    "first_name": "Anonymous",
    "phone": None,
    "birth_date": date(1957, 1, 1),
    "postcode": "59",
    "password": "pjdbofhabaacaoch",
    "gender": "F",
}


def test_quasi_identifiers_are_what_the_strategies_generalised_and_what_the_register_marks():
    assert quasi_identifiers(TARGET) == ["birth_date", "postcode", "gender"]


def test_an_erased_row_is_told_by_the_strategies_own_output():
    assert can_tell_erased(TARGET)
    assert is_erased(TARGET, FACTS, ERASED)
    # any column still as the person left it: not erased
    for column, live in [
        ("email", "jeanne@example.org"),
        ("first_name", "Jeanne"),
        ("phone", "+33 6 12 34 56 78"),
        ("birth_date", date(1957, 10, 10)),
        ("postcode", "59000"),
    ]:
        assert not is_erased(TARGET, FACTS, {**ERASED, column: live}), column


def test_a_row_with_no_mark_of_a_sweep_is_not_counted():
    # NULLs and a year alone could be a live row's own values
    unmarked = {**ERASED, "email": None, "first_name": None}
    assert not is_erased(TARGET, FACTS, unmarked)
    quiet = Target.model_validate(
        {"table": "t", "key": "id", "columns": {"phone": None, "born": "year"}}
    )
    assert not can_tell_erased(quiet)


def test_k_min_is_the_smallest_group_and_below_k_counts_its_rows():
    groups = [("1957", "59")] * 3 + [("1960", "75")] * 5 + [("1990", "2A")]
    found = measure(groups, k=5)
    assert (found.rows, found.k_min, found.below_k) == (9, 1, 4)
    assert measure(groups, k=2).below_k == 1
    assert measure([], k=5).k_min is None
