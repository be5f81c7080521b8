"""A register changed by `model_copy(update=...)` answers from its new fields: what the
original had cached (the touch index, a rule's event types) is not carried along."""

from __future__ import annotations

from worker.domain.register import Entry
from worker.domain.register_file import default_register_path, load_register


def test_a_copy_with_another_rule_touches_what_its_rule_reads() -> None:
    register = load_register(default_register_path())
    # the original's caches are filled first, as a running worker's are
    assert not register.activities_touched("dispute.opened", "visitor")
    navigation = register.activity("website.navigation")
    rule = navigation.retention[0]
    assert "dispute.opened" not in rule.event_types

    reads_disputes = rule.model_copy(update={"clock": [*rule.clock, Entry(type="dispute.opened")]})
    assert "dispute.opened" in reads_disputes.event_types
    activities = [
        a.model_copy(update={"retention": [reads_disputes, *a.retention[1:]]})
        if a.id == navigation.id
        else a
        for a in register.activities
    ]
    copy = register.model_copy(update={"activities": activities})

    assert [a.id for a in copy.activities_touched("dispute.opened", "visitor")] == [navigation.id]
    assert ("dispute.opened", "visitor", navigation.id) in copy.touches()
    # and the original is as it was
    assert not register.activities_touched("dispute.opened", "visitor")
    assert "dispute.opened" not in rule.event_types


def test_a_copy_in_another_zone_computes_in_that_zone() -> None:
    register = load_register(default_register_path())
    assert register.tz.key == "Europe/Paris"  # cached on the original first
    copy = register.model_copy(update={"timezone": "America/Martinique"})
    assert copy.tz.key == "America/Martinique"
