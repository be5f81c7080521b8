"""A DPO writes retention periods the way the register reads: `13 months`, `3 years`, `P2Y`."""

from __future__ import annotations

import pendulum
import pytest

from worker.domain.durations import Duration, DurationError, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("13 months", Duration(months=13)),
        ("3 years", Duration(years=3)),
        ("1 year", Duration(years=1)),
        ("P2Y", Duration(years=2)),
        ("P1Y6M", Duration(years=1, months=6)),
        ("p2y", Duration(years=2)),
        ("2 years 6 months", Duration(years=2, months=6)),
        ("2 years and 6 months", Duration(years=2, months=6)),
        ("2 years, 6 months", Duration(years=2, months=6)),
        ("0 days", Duration()),
        ("P0D", Duration()),
        ("2 weeks", Duration(weeks=2)),
        ("3 ans", Duration(years=3)),
        ("13 mois", Duration(months=13)),
        ("  5 years  ", Duration(years=5)),
    ],
)
def test_register_durations_are_read_as_calendar_units(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("duration", "shown"),
    [
        (Duration(months=13), "13 months"),
        (Duration(years=1), "1 year"),
        (Duration(years=2, months=6), "2 years 6 months"),
        (Duration(), "0 days"),
    ],
)
def test_a_duration_reads_back_as_the_register_wrote_it(duration, shown):
    assert str(duration) == shown
    assert parse_duration(str(duration)) == duration


def test_a_zero_duration_ends_at_the_anchor_itself():
    anchor = pendulum.datetime(2024, 5, 1, 20, 12, tz="Europe/Paris")
    assert parse_duration("0 days").after(anchor) == anchor


def test_five_years_after_a_leap_day_is_the_last_day_of_february():
    anchor = pendulum.datetime(2020, 2, 29, 10, 0, tz="Europe/Paris")
    assert parse_duration("5 years").after(anchor) == pendulum.datetime(
        2025, 2, 28, 10, 0, tz="Europe/Paris"
    )


def test_a_misspelled_unit_is_refused_with_the_units_accepted():
    with pytest.raises(DurationError) as refused:
        parse_duration("3 yeers")
    message = str(refused.value)
    assert "'yeers'" in message
    assert "years" in message and "months" in message and "days" in message


@pytest.mark.parametrize("text", ["", "   ", "five years", "13", "1.5 years", "-3 years", "P"])
def test_text_without_a_number_and_a_unit_is_refused_with_examples(text):
    with pytest.raises(DurationError) as refused:
        parse_duration(text)
    message = str(refused.value)
    assert repr(text) in message
    assert "'13 months'" in message and "'P2Y'" in message


@pytest.mark.parametrize("text", ["3 years nada", "2 years dd 6 months", "5 years and a"])
def test_stray_words_around_a_duration_are_refused_not_ignored(text):
    with pytest.raises(DurationError, match="write a number and a unit"):
        parse_duration(text)


@pytest.mark.parametrize("value", [12, 3.5, None])
def test_a_bare_number_is_refused_because_it_has_no_unit(value):
    with pytest.raises(DurationError) as refused:
        parse_duration(value)
    message = str(refused.value)
    assert "no unit" in message
    assert "'13 months'" in message and "'3 years'" in message


def test_a_refused_duration_is_a_value_error_for_validators():
    assert issubclass(DurationError, ValueError)


def test_the_two_half_past_twos_of_an_autumn_night_stay_an_hour_apart():
    # In one zone the two 02:30 of 26 October 2025 compare equal, though an hour apart:
    # the arithmetic (cached) must not give the second the first one's result.
    paris = pendulum.timezone("Europe/Paris")
    first = pendulum.instance(pendulum.datetime(2025, 10, 26, 0, 30, tz="UTC").in_timezone(paris))
    second = pendulum.instance(pendulum.datetime(2025, 10, 26, 1, 30, tz="UTC").in_timezone(paris))
    assert (first.hour, second.hour) == (2, 2)
    zero = Duration()
    assert zero.after(first) == first
    assert zero.after(second) == second
    assert (zero.after(second) - zero.after(first)).in_seconds() == 3600
