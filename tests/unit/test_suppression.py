"""Which events put an address's keyed hash on the suppression list, which take it off,
and from when its retention counts."""

from __future__ import annotations

import itertools
from functools import reduce
from pathlib import Path

import pendulum
import pytest

from worker.domain.hashing import value_hash
from worker.settings import SettingsError, load_settings
from worker.store.suppression import Entry, entries_from_events, in_force, opposed_at

HASH = value_hash(b"k" * 32, "ines.roux@example.org")


def _at(text: str) -> pendulum.DateTime:
    return pendulum.parse(text)


def test_an_unsubscription_or_an_erasure_request_suppresses_a_subscription_at_once(register, event):
    for event_type in ("newsletter.unsubscribed", "erasure.requested"):
        sent = event(event_type, "customer:5", "2026-03-01T10:00:00+01:00", email_hash=HASH)
        entry = entries_from_events([sent], register)[HASH]
        assert entry == Entry("newsletter", opposed_at=_at("2026-03-01T10:00:00+01:00"))
        assert in_force(entry.opposed_at, entry.subscribed_at), event_type


def test_a_subscription_is_recorded_without_suppressing_and_a_malformed_hash_is_ignored(
    register, event
):
    subscribed = event(
        "newsletter.subscribed", "customer:5", "2026-03-01T10:00:00+01:00", email_hash=HASH
    )
    not_a_hash = event(
        "newsletter.unsubscribed",
        "customer:5",
        "2026-03-01T10:00:00+01:00",
        email_hash="ines.roux@example.org",
    )
    entries = entries_from_events([subscribed, not_a_hash], register)
    assert entries == {
        HASH: Entry("newsletter", subscribed_at=_at("2026-03-01T10:00:00+01:00")),
    }
    assert not in_force(entries[HASH].opposed_at, entries[HASH].subscribed_at)


def test_a_subscription_without_the_address_hash_can_lift_nothing(register, event):
    # Lethe never sees the address: without match={"email": ...} there is nothing to lift
    assert (
        entries_from_events(
            [event("newsletter.subscribed", "customer:5", "2026-03-02T10:00:00+01:00")], register
        )
        == {}
    )


@pytest.mark.parametrize(
    ("subscribed", "suppressed"),
    [
        ("2026-03-02T10:00:00+01:00", False),  # subscribed again after leaving
        ("2026-03-01T10:00:00+01:00", True),  # the same instant: the opposition wins
        ("2026-02-01T10:00:00+01:00", True),  # one dated before it, however late it arrives
    ],
)
def test_whether_the_address_is_suppressed_depends_on_the_dates_not_the_arrival_order(
    register, event, subscribed, suppressed
):
    history = [
        event("newsletter.subscribed", "customer:5", "2026-01-01T10:00:00+01:00", email_hash=HASH),
        event(
            "newsletter.unsubscribed", "customer:5", "2026-03-01T10:00:00+01:00", email_hash=HASH
        ),
        # the same address subscribed again, maybe under another subject
        event("newsletter.subscribed", "visitor:9", subscribed, email_hash=HASH),
    ]
    answers = set()
    for order in itertools.permutations(history):
        # one event per batch, in this order: the store merges each batch's entry
        batches = [entries_from_events([e], register)[HASH] for e in order]
        merged = reduce(Entry.merged, batches)
        answers.add(in_force(merged.opposed_at, merged.subscribed_at))
        assert merged.kept_from == max(e.occurred_at for e in history)
    assert answers == {suppressed}


def test_a_sweep_dates_an_erasure_request_made_long_after_leaving_at_the_request(register):
    newsletter = next(a for a in register.activities if a.id == "newsletter")
    unsubscribed, requested = _at("2020-01-10T10:00:00Z"), _at("2026-11-20T10:00:00Z")
    logged = [
        ("newsletter.subscribed", _at("2019-05-01T10:00:00Z")),
        ("newsletter.unsubscribed", unsubscribed),
        ("erasure.requested", requested),
        ("order.closed", _at("2026-11-21T10:00:00Z")),
        ("newsletter.unsubscribed", _at("2027-01-01T10:00:00Z")),  # after the sweep's now
    ]
    now = _at("2026-11-26T02:00:00Z")
    # the lifecycle is due since the unsubscription, yet the objection is the request
    assert opposed_at(newsletter, logged, unsubscribed, now) == requested
    assert opposed_at(newsletter, logged[:1], unsubscribed, now) == unsubscribed


def test_suppression_days_default_to_three_years_and_are_read_from_the_environment(
    tmp_path: Path,
):
    home = {"LETHE_HOME": str(tmp_path)}
    assert load_settings(home).sweep.suppression_days == 1096
    assert load_settings({**home, "LETHE_SUPPRESSION_DAYS": "400"}).sweep.suppression_days == 400
    with pytest.raises(SettingsError, match="LETHE_SUPPRESSION_DAYS"):
        load_settings({**home, "LETHE_SUPPRESSION_DAYS": "three years"})
