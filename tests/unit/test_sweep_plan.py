"""Sweep planning on paper: slots, approvals, the audit's rule text, the forecast, the claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pendulum
import pytest
from sqlalchemy.dialects import postgresql, sqlite

from schedules.beat import CLOCK_SKEW, slot_for
from worker.domain.register_file import RegisterError, parse_register
from worker.domain.sweep_rules import (
    ApprovalLimits,
    DueLifecycle,
    LoggedEvent,
    approval_reasons,
    forecast,
    rule_text,
    table_kinds,
    targets_for,
)
from worker.sweeps.claims import claim_statement

# The nightly instants around each daylight-saving night, written out by hand (UTC):
# in spring 02:30 does not exist and stands for 01:30+01:00; in autumn 02:30 happens
# twice and the first one counts; 03:00 happens once on both nights.
NIGHTLY = {
    ("2026-03-29", "02:30"): [
        "2026-03-27T01:30Z",
        "2026-03-28T01:30Z",
        "2026-03-29T00:30Z",
        "2026-03-30T00:30Z",
    ],
    ("2026-03-29", "03:00"): [
        "2026-03-27T02:00Z",
        "2026-03-28T02:00Z",
        "2026-03-29T01:00Z",
        "2026-03-30T01:00Z",
    ],
    ("2026-10-25", "02:30"): [
        "2026-10-23T00:30Z",
        "2026-10-24T00:30Z",
        "2026-10-25T00:30Z",
        "2026-10-26T01:30Z",
    ],
    ("2026-10-25", "03:00"): [
        "2026-10-23T01:00Z",
        "2026-10-24T01:00Z",
        "2026-10-25T02:00Z",
        "2026-10-26T02:00Z",
    ],
}


@pytest.mark.parametrize(("night", "at"), sorted(NIGHTLY))
def test_every_tick_of_a_daylight_saving_night_falls_in_one_slot_a_day(night, at):
    # Each tick, whenever it fires, names the latest nightly instant at or before it
    # (CLOCK_SKEW early at most): one slot per local day, and never the night before's,
    # which is claimed already (the night would pass without a sweep).
    nightly = [pendulum.parse(s) for s in NIGHTLY[(night, at)]]
    start = pendulum.parse(f"{night}T00:00:00", tz="UTC").subtract(days=1)
    wrong = []
    for minutes in range(0, 3 * 24 * 60, 7):
        tick = start.add(minutes=minutes)
        expected = max(s for s in nightly if s <= tick + CLOCK_SKEW)
        got = slot_for(tick, at, "Europe/Paris")
        if got != expected:
            wrong.append(f"tick {tick.isoformat()}: slot {got.isoformat()}, not {expected}")
    assert not wrong, wrong


@pytest.mark.parametrize("tick", ["03:00", "03:10", "03:29", "03:45", "23:00"])
def test_a_tick_just_after_the_spring_jump_is_that_days_sweep(tick):
    # 02:30 does not exist on 2026-03-29 in Paris (02:00 -> 03:00)
    moment = pendulum.parse(f"2026-03-29T{tick}:00+02:00")
    slot = slot_for(moment, "02:30", "Europe/Paris")
    assert slot.in_timezone("Europe/Paris").date() == pendulum.date(2026, 3, 29)
    assert slot <= moment


def test_a_late_or_repeated_tick_names_the_same_slot():
    on_time = slot_for(pendulum.parse("2026-01-10T03:00:00+01:00"), "03:00", "Europe/Paris")
    late = slot_for(pendulum.parse("2026-01-10T21:45:00+01:00"), "03:00", "Europe/Paris")
    assert on_time == late == pendulum.parse("2026-01-10T02:00:00Z")
    before = slot_for(pendulum.parse("2026-01-10T02:55:00+01:00"), "03:00", "Europe/Paris")
    assert before == on_time.subtract(days=1)


def test_a_worker_whose_clock_is_a_little_behind_beats_still_sweeps_that_night():
    # beat fired at 03:00:00; the worker's clock read 02:59:58 when it took the tick
    behind = slot_for(pendulum.parse("2026-01-10T02:59:58+01:00"), "03:00", "Europe/Paris")
    assert behind == pendulum.parse("2026-01-10T02:00:00Z")


def test_a_clock_jumping_back_an_hour_cannot_make_a_second_slot():
    # 03:10+02:00 is 02:10 in winter time, 40 minutes after that night's first 02:30:
    # the worker whose clock still reads summer time, and the one read after the jump,
    # both name that night's slot (before: the first named the night before's).
    first = slot_for(pendulum.parse("2026-10-25T03:10:00+02:00"), "02:30", "Europe/Paris")
    again = slot_for(pendulum.parse("2026-10-25T02:40:00+01:00"), "02:30", "Europe/Paris")
    assert first == again == pendulum.parse("2026-10-25T02:30:00+02:00")


LIMITS = ApprovalLimits(factor=10, share=0.5, floor=100)


def test_the_first_sweep_on_a_register_waits_for_approval():
    reasons = approval_reasons(5, [], True, {}, {}, LIMITS)
    assert reasons and "first sweep with this register" in reasons[0]


def test_ten_times_the_median_waits_and_says_why():
    reasons = approval_reasons(2_000, [100, 120, 90, 110], False, {}, {}, LIMITS)
    assert reasons == ["2000 lifecycles due, more than 10 x the median of the last 4 sweeps (105)"]
    assert approval_reasons(1_000, [100, 120, 90, 110], False, {}, {}, LIMITS) == []


def test_small_sweeps_never_wait_and_a_short_history_has_no_median():
    assert approval_reasons(99, [1, 1, 1], False, {}, {}, LIMITS) == []
    assert approval_reasons(5_000, [1, 1], False, {}, {}, LIMITS) == []


def test_most_of_a_table_at_once_waits():
    reasons = approval_reasons(600, [], False, {"customers": 600}, {"customers": 1_000}, LIMITS)
    assert reasons == ["table customers: 600 of its 1000 rows' subjects are due (60%, limit 50%)"]


def test_the_limits_are_more_than_and_read_the_last_ten_sweeps():
    # docs/sweeps.md: more than 10 x the median, more than 50 % of a table's rows
    history = [100, 110, 105]  # three sweeps are enough for a median
    assert approval_reasons(1_050, history, False, {}, {}, LIMITS) == []
    assert approval_reasons(1_051, history, False, {}, {}, LIMITS) == [
        "1051 lifecycles due, more than 10 x the median of the last 3 sweeps (105)"
    ]
    assert approval_reasons(500, [], False, {"customers": 500}, {"customers": 1_000}, LIMITS) == []
    assert approval_reasons(501, [], False, {"customers": 501}, {"customers": 1_000}, LIMITS)
    # the median of the 10 latest (listed latest first), not of a busier past
    assert approval_reasons(2_000, [100] * 10 + [10_000] * 15, False, {}, {}, LIMITS)


def test_a_small_table_mostly_due_never_waits():
    # below the floor no sweep stops for size, whatever share of a small table it is
    assert approval_reasons(60, [], False, {"candidates": 60}, {"candidates": 80}, LIMITS) == []


def test_due_subjects_are_counted_per_table_by_the_kinds_a_target_holds(register):
    pairs = table_kinds(register)
    # invoices: deleted at 10 years for customers and ambassadors alike
    assert ("invoices", "crm.invoices", "customer") in pairs
    assert ("invoices", "crm.invoices", "ambassador") in pairs
    assert ("customers", "crm.customers", "customer") in pairs
    # a target that names kinds holds only those: crm.customers' invoices are customers'
    assert ("invoices", "crm.customers", "customer") in pairs
    assert ("invoices", "crm.customers", "ambassador") not in pairs
    assert ("invoices", "ambassadors", "ambassador") in pairs
    invoices = register.activity("crm.invoices")
    assert [t.key for t in targets_for(invoices, "ambassador")] == ["ambassador_ref"]


def test_the_audit_names_an_erasure_request_as_art_17(register):
    at = datetime(2025, 3, 3, 9, tzinfo=UTC)
    lifecycle = DueLifecycle(1, "customer:1", "crm.customers", at, at)
    events = [
        LoggedEvent("order.closed", at - timedelta(days=9)),
        LoggedEvent("erasure.requested", at),
    ]
    text = rule_text(register.activity("crm.customers"), lifecycle, events, register.tz)
    assert text == "crm.customers: erasure.requested (GDPR art. 17) at 2025-03-03T10:00:00+01:00"
    clock = rule_text(register.activity("crm.customers"), lifecycle, events[:1], register.tz)
    assert "anonymise 5 years after order.closed|contact.made" in clock


def test_the_forecast_groups_by_local_month_and_activity(register):
    rows = [
        ("crm.customers", datetime(2027, 1, 31, 23, 30, tzinfo=UTC), "anonymise"),  # Feb in Paris
        ("crm.customers", datetime(2027, 2, 10, tzinfo=UTC), "anonymise"),
        ("website.navigation", datetime(2027, 1, 5, tzinfo=UTC), "delete"),
    ]
    assert forecast(rows, register.tz) == [
        {"month": "2027-01", "activity": "website.navigation", "then": "delete", "lifecycles": 1},
        {"month": "2027-02", "activity": "crm.customers", "then": "anonymise", "lifecycles": 2},
    ]


def test_sqlalchemy_drops_skip_locked_on_sqlite_so_the_sweep_has_its_own_guard():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    statement = claim_statement(1, now, (now, 7), 500)
    on_postgres = str(statement.compile(dialect=postgresql.dialect()))
    on_sqlite = str(statement.compile(dialect=sqlite.dialect()))
    assert "FOR UPDATE OF lifecycles SKIP LOCKED" in on_postgres
    # Silently gone: on SQLite the claim reads and marks in a transaction begun IMMEDIATE,
    # under the database's one write lock (worker/sweeps/claims.py, worker/store/schema.py).
    assert "FOR UPDATE" not in on_sqlite and "SKIP LOCKED" not in on_sqlite


def test_a_register_target_with_an_unknown_strategy_points_at_its_line(register):
    from worker.domain.register_file import default_register_path

    text = default_register_path().read_text(encoding="utf-8")
    broken = text.replace("birth_date: year", "birth_date: blur", 1)
    line = text[: text.index("birth_date: year")].count("\n") + 1
    with pytest.raises(RegisterError) as caught:
        parse_register(broken, "register.yaml")
    (problem,) = caught.value.problems
    assert problem.line == line
    assert "unknown strategy 'blur' for column 'birth_date'" in problem.message


def test_columns_kept_by_law_need_the_duty_named(register):
    from worker.domain.register_file import default_register_path

    text = default_register_path().read_text(encoding="utf-8")
    start = text.index("            note: >-\n              Lethe: an invoice is kept")
    end = text.index("crm.invoices deletes the whole rows at 10 years.", start) + len(
        "crm.invoices deletes the whole rows at 10 years.\n"
    )
    with pytest.raises(RegisterError) as caught:
        parse_register(text[:start] + text[end:], "register.yaml")
    assert any("need a note naming the legal duty" in p.message for p in caught.value.problems)


def test_beat_runs_the_sweep_and_the_report_at_their_local_times(tmp_path):
    from schedules.beat import beat_schedule
    from worker.settings import load_settings

    settings = load_settings({"LETHE_HOME": str(tmp_path), "LETHE_REPORT_AT": "06:30"})
    schedule = beat_schedule(settings)
    sweep, report = schedule["nightly-sweep"], schedule["daily-report"]
    assert (sweep["task"], sweep["schedule"].hour, sweep["schedule"].minute) == (
        "lethe.sweep",
        {3},
        {0},
    )
    assert (report["task"], report["schedule"].hour, report["schedule"].minute) == (
        "lethe.report",
        {6},
        {30},
    )
    assert settings.sweep.timezone == "Europe/Paris"


def test_a_sweep_time_that_is_not_a_time_is_refused_naming_the_variable(tmp_path):
    from worker.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="LETHE_SWEEP_AT='3h' is not a time of day"):
        load_settings({"LETHE_HOME": str(tmp_path), "LETHE_SWEEP_AT": "3h"})
