"""Register sources, pure: their checks with `file:line`, their templates, and how a shop's
`at` value is read (naive in the register's zone, DST nights, zero dates, NULL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from worker.domain.register_file import RegisterError, default_register_path, parse_register
from worker.domain.sources import Skipped, fill, instant_of, placeholders, select_names
from worker.domain.sweep_rules import ApprovalLimits, approval_reasons, register_digest

PARIS = "Europe/Paris"


def test_a_naive_datetime_is_a_wall_clock_reading_in_the_registers_zone():
    assert instant_of(datetime(2026, 1, 15, 10, 0), PARIS) == datetime(2026, 1, 15, 9, tzinfo=UTC)
    assert instant_of(datetime(2026, 7, 15, 10, 0), PARIS) == datetime(2026, 7, 15, 8, tzinfo=UTC)
    assert instant_of("2026-07-15 10:00:00", PARIS) == datetime(2026, 7, 15, 8, tzinfo=UTC)
    # a DATE is midnight there
    assert instant_of(date(2026, 7, 15), PARIS) == datetime(2026, 7, 14, 22, tzinfo=UTC)


def test_an_aware_value_keeps_its_own_offset():
    aware = datetime(2026, 7, 15, 10, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert instant_of(aware, PARIS) == datetime(2026, 7, 15, 15, tzinfo=UTC)
    assert instant_of("2026-07-15T10:00:00Z", PARIS) == datetime(2026, 7, 15, 10, tzinfo=UTC)


def test_on_daylight_saving_nights_the_later_instant_is_taken_so_no_deadline_comes_early():
    # 02:30 never happened in Paris on 2026-03-29 (02:00 -> 03:00): read with the winter
    # offset, it is 01:30 UTC (03:30 summer time), the later of its two readings
    assert instant_of(datetime(2026, 3, 29, 2, 30), PARIS) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )
    # 02:30 happened twice on 2026-10-25 (00:30 and 01:30 UTC): the second one
    assert instant_of(datetime(2026, 10, 25, 2, 30), PARIS) == datetime(
        2026, 10, 25, 1, 30, tzinfo=UTC
    )
    # either side of those hours, nothing moves
    assert instant_of(datetime(2026, 3, 29, 1, 59), PARIS) == datetime(
        2026, 3, 29, 0, 59, tzinfo=UTC
    )
    assert instant_of(datetime(2026, 10, 25, 3, 0), PARIS) == datetime(2026, 10, 25, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "null"),
        ("", "null"),
        ("0000-00-00 00:00:00", "zero_date"),
        ("0000-00-00", "zero_date"),
        ("2020-00-00", "zero_date"),
        ("2020-01-00 10:00:00", "zero_date"),
        ("yesterday", "unreadable"),
        (42, "unreadable"),
    ],
)
def test_null_zero_dates_and_text_that_is_no_date_are_skipped_with_their_reason(value, reason):
    assert instant_of(value, PARIS) == Skipped(reason)


def test_templates_name_columns_and_are_filled_from_the_row():
    assert placeholders("order-{id_order}-closed") == ["id_order"]
    assert fill("customer:{id_customer}", {"id_customer": 42}) == "customer:42"
    assert fill("{ref}", {"ref": "p-1   "}) == "p-1", "CHAR(n) padding is no part of an id"
    assert select_names("SELECT o.id_order, c.id_customer AS who, o.date_upd FROM x") == {
        "id_order",
        "who",
        "date_upd",
    }
    assert select_names("SELECT * FROM x") is None


SOURCES = """sources:
  - event: order.closed
    table: ps_orders
    subject: "customer:{id_customer}"
    at: date_upd
    id: "order-{id_order}-closed"
  - event: order.shipped
    table: ps_orders
    subject: "client:{id_customer}"
    at: date_upd
    id: "order-{id_order:05d}"
  - event: newsletter.subscribed
    query: SELECT c.id_customer, c.date_add FROM ps_customer c
    subject: "customer:{id_customer}"
    at: date_upd
    id: "static"
    data: {shop: "{id_shop}"}
  - event: candidate.applied
    table: ps_orders
    query: SELECT 1
    subject: "customer:{id_customer}"
    at: date_upd
    id: "x-{id_order}"
"""


def _with_sources(text: str) -> str:
    shipped = default_register_path().read_text(encoding="utf-8")
    head, rest = shipped.split("\n# Where the shop's existing rows", 1)
    return head + "\n" + text + rest[rest.index("\nactivities:\n") :]


def test_register_check_names_each_sources_problem_at_its_line():
    text = _with_sources(SOURCES)
    lines = text.splitlines()
    with pytest.raises(RegisterError) as caught:
        parse_register(text, "r.yaml")
    problems = {(p.line, p.message) for p in caught.value.problems}

    def line(fragment: str, after: int = 0) -> int:
        return next(i + 1 for i, t in enumerate(lines) if i >= after and fragment in t)

    second = line("event: order.shipped")
    third = line("event: newsletter.subscribed", second)
    fourth = line("event: candidate.applied", third)
    messages = "\n".join(f"{n}: {m}" for n, m in sorted(problems))
    assert f"{second}: source 'order.shipped' from 'ps_orders': unknown event type" in messages
    assert f"{line('client:{id_customer}')}: source 'order.shipped' from 'ps_orders': " in messages
    assert "unknown subject kind 'client'" in messages
    assert "{id_order:05d} is not a column name" in messages
    # a query's returned names are read from its SELECT list
    static = line('id: "static"')
    assert f"{static}: source 'newsletter.subscribed' from 'query': id " in messages
    assert "{id_shop} is not a column the query returns" in messages
    assert "at 'date_upd' is not a column the query returns" in messages
    # a customer's newsletter subscription starts a lifecycle: no "touches nothing" here
    assert "no activity's rule uses 'newsletter.subscribed'" not in messages
    assert f"{fourth}: source 'candidate.applied' from 'ps_orders': give either table:" in messages


def test_a_source_whose_events_no_rule_uses_is_refused():
    text = _with_sources(
        "sources:\n"
        "  - event: candidate.applied\n"
        "    table: ps_customer\n"
        '    subject: "customer:{id_customer}"\n'
        "    at: date_add\n"
        '    id: "c-{id_customer}"\n'
    )
    with pytest.raises(RegisterError) as caught:
        parse_register(text, "r.yaml")
    [problem] = caught.value.problems
    assert "no activity's rule uses 'candidate.applied' about a customer" in problem.message


def test_sources_ask_for_no_new_approval_but_a_backfill_does():
    shipped = default_register_path().read_text(encoding="utf-8")
    without = _with_sources("sources: []\n")
    assert register_digest(parse_register(shipped)) == register_digest(parse_register(without))
    limits = ApprovalLimits()
    quiet = approval_reasons(5, [5, 5, 5], False, {}, {}, limits, backfill_since_approval=False)
    assert quiet == []
    [reason] = approval_reasons(5, [5, 5, 5], False, {}, {}, limits, backfill_since_approval=True)
    assert "first sweep since a backfill" in reason
    assert approval_reasons(0, [5, 5, 5], False, {}, {}, limits, backfill_since_approval=True) == []
