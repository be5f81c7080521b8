"""Which events put an address's keyed hash on the suppression list at once."""

from __future__ import annotations

from worker.hashing import value_hash
from worker.suppression import hashes_to_suppress

HASH = value_hash(b"k" * 32, "ines.roux@example.org")


def test_an_unsubscription_or_an_erasure_request_suppresses_a_subscription_at_once(register, event):
    for event_type in ("newsletter.unsubscribed", "erasure.requested"):
        sent = event(event_type, "customer:5", "2026-03-01T10:00:00+01:00", email_hash=HASH)
        assert hashes_to_suppress([sent], register) == {HASH: "newsletter"}, event_type


def test_a_subscription_or_a_malformed_hash_suppresses_nothing(register, event):
    subscribed = event(
        "newsletter.subscribed", "customer:5", "2026-03-01T10:00:00+01:00", email_hash=HASH
    )
    not_a_hash = event(
        "newsletter.unsubscribed",
        "customer:5",
        "2026-03-01T10:00:00+01:00",
        email_hash="ines.roux@example.org",
    )
    assert hashes_to_suppress([subscribed, not_a_hash], register) == {}
