"""contact.made says which way it went, rule entries match on it, and the stored log of
earlier releases reads leniently (worker/domain/event_data.py, worker/domain/register.py)."""

from __future__ import annotations

import pytest

from worker.domain.event_data import missing_data, read_stored
from worker.domain.register import Entry, matching
from worker.domain.register_file import RegisterError, parse_register

INBOUND = Entry(type="contact.made", when={"direction": "inbound"})


@pytest.mark.parametrize(
    ("event_type", "data", "matches"),
    [
        ("contact.made", {"direction": "inbound", "channel": "form"}, True),
        ("contact.made", {"direction": "outbound"}, False),
        ("contact.made", {}, False),
        ("order.closed", {"direction": "inbound"}, False),
    ],
)
def test_an_entry_matches_its_type_and_every_listed_field(event_type, data, matches):
    assert INBOUND.matches(event_type, data) is matches


def test_true_is_not_1_in_a_when():
    # Python says True == 1; a shop's `keep: 1` is not the consent `keep: true`
    entry = Entry(type="candidate.rejected", when={"keep": True})
    assert entry.matches("candidate.rejected", {"keep": True})
    assert not entry.matches("candidate.rejected", {"keep": 1})


def test_a_plain_type_matches_every_event_of_that_type():
    plain = Entry(type="contact.made")
    assert matching([plain], "contact.made", {"direction": "outbound"})
    assert str(plain) == "contact.made"
    assert str(INBOUND) == "contact.made(direction=inbound)"


def test_new_events_must_say_their_direction_but_the_stored_log_reads_as_inbound():
    assert missing_data("contact.made", {"direction": "outbound"}) is None
    assert "needs data.direction" in (missing_data("contact.made", {}) or "")
    assert missing_data("order.closed", {}) is None
    # events an earlier release stored: the only reading that never erases early
    assert read_stored("contact.made", {"channel": "form"}) == {
        "direction": "inbound",
        "channel": "form",
    }
    assert read_stored("contact.made", {"direction": "outbound"}) == {"direction": "outbound"}
    assert read_stored("order.closed", {}) == {}


REGISTER = """\
name: tiny
controller: {name: SHOP}
subject_kinds: [prospect]
events:
  contact.made: a contact, data.direction inbound or outbound
activities:
  - id: prospects
    name: Prospects
    role: controller
    controller: SHOP
    subjects: [prospect]
    data: [identity]
    purposes: [{purpose: answer, legal_basis: consent}]
    retention:
      - clock: [%s]
        keep: 3 years
        then: anonymise
        source: CNIL
"""


def test_a_register_entry_reads_as_a_type_or_a_type_with_when():
    register = parse_register(REGISTER % "{type: contact.made, when: {direction: inbound}}")
    assert register.activity("prospects").retention[0].clock == [INBOUND]
    assert register.activities_touched("contact.made", "prospect")  # touched by type


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{type: contact.made, when: {direction: sideways}}", "'sideways' never matches"),
        ("{type: contact.made, when: {}}", "when is empty"),
        ("{type: contact.made, when: {direction: {a: b}}}", "a mapping is no value"),
        ("[contact.made]", "an entry cannot be a list"),
    ],
)
def test_a_malformed_entry_is_named_on_its_line(entry, message):
    with pytest.raises(RegisterError) as error:
        parse_register(REGISTER % entry, "tiny.yaml")
    assert [p.line for p in error.value.problems] == [15]  # the clock line
    assert message in str(error.value)
