"""Forgetting on paper: its setting, and the erasure requests the audit still names once
the event log is gone."""

from __future__ import annotations

import pendulum
import pytest

from worker.domain.register import Register
from worker.domain.sweep_rules import ART17, DueLifecycle, LoggedEvent, rule_text
from worker.settings import SettingsError, load_settings
from worker.store.audit import requests_named


def test_lethe_forgets_erased_people_a_year_after_by_default_or_when_told():
    assert load_settings({}).sweep.forget_after_days == 365
    told = load_settings({"LETHE_FORGET_AFTER_DAYS": "730"})
    assert told.sweep.forget_after_days == 730


@pytest.mark.parametrize("value", ["0", "-1", "a year"])
def test_a_forget_period_that_is_not_a_positive_number_of_days_is_refused(value):
    with pytest.raises(SettingsError, match="LETHE_FORGET_AFTER_DAYS"):
        load_settings({"LETHE_FORGET_AFTER_DAYS": value})


def _rule(register: Register, activity_id: str, anchor: str, events: list[LoggedEvent]) -> str:
    activity = next(a for a in register.activities if a.id == activity_id)
    at = pendulum.parse(anchor)
    lifecycle = DueLifecycle(1, "prospect:p-1", activity_id, at, at)
    return rule_text(activity, lifecycle, events, register.tz)


def test_the_audit_rule_of_an_erasure_request_gives_back_the_request_instant(register):
    asked = pendulum.parse("2022-04-01T10:00:00+02:00")
    rules = [
        _rule(register, a, "2022-04-01T10:00:00+02:00", [LoggedEvent(ART17, asked)])
        for a in ("website.prospects", "newsletter")
    ]
    contact = LoggedEvent("contact.made", pendulum.parse("2019-03-01T10:00:00+01:00"))
    rules.append(_rule(register, "website.prospects", "2019-03-01T10:00:00+01:00", [contact]))
    assert requests_named(rules) == {asked}


def test_a_rule_that_names_no_request_or_a_mangled_date_gives_nothing():
    assert requests_named(["sales: anonymise 5 years after order.closed (anchor -)"]) == set()
    assert requests_named([f"sales: {ART17} (GDPR art. 17) at -"]) == set()


def test_disputes_whose_case_ids_were_lost_count_as_open_while_more_were_opened(register):
    # the release before migration 0005 emptied dispute events of erased people: case
    # A opened, B opened, A closed became three events with no case
    from datetime import UTC, datetime

    from worker.domain.events import Event
    from worker.sweeps.forgetting import _cases_lost

    def dispute(n: int, kind: str, **data: str) -> Event:
        return Event(f"d-{n}", kind, "customer:9", datetime(2026, 1, n, tzinfo=UTC), data)

    lost = [
        dispute(1, "dispute.opened"),
        dispute(2, "dispute.opened"),
        dispute(3, "dispute.closed"),
    ]
    assert _cases_lost(lost, register)
    assert not _cases_lost([*lost, dispute(4, "dispute.closed")], register)
    named = [dispute(1, "dispute.opened", case="A"), dispute(2, "dispute.closed", case="A")]
    assert not _cases_lost(named, register)
