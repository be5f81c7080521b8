"""The shop sends events; a malformed one is refused with a reason it can act on."""

from __future__ import annotations

import json

import pendulum
import pytest

from worker.domain.events import EventRefused, parse_event

GOOD = {
    "id": "0b9e-0001",
    "type": "order.closed",
    "subject": "customer:42",
    "occurred_at": "2026-03-01T10:00:00+01:00",
    "data": {"order": "A-1009"},
}


def refusal(register, raw) -> str:
    with pytest.raises(EventRefused) as refused:
        parse_event(raw, register)
    return str(refused.value)


def test_a_well_formed_event_is_accepted_with_its_offset(register):
    event = parse_event(GOOD, register)
    assert event.id == "0b9e-0001"
    assert event.type == "order.closed"
    assert event.subject == "customer:42"
    assert event.kind == "customer"
    assert event.occurred_at == pendulum.datetime(2026, 3, 1, 9, 0, tz="UTC")
    assert event.occurred_at.utcoffset().total_seconds() == 3600
    assert event.data == {"order": "A-1009"}


def test_an_event_read_from_a_json_line_is_the_same_event(register):
    assert parse_event(json.dumps(GOOD), register) == parse_event(GOOD, register)


def test_an_event_survives_the_round_trip_through_the_queue(register):
    event = parse_event(GOOD, register)
    again = parse_event(json.loads(json.dumps(event.to_message())), register)
    assert again == event
    assert again.data == event.data
    assert again.occurred_at.isoformat() == "2026-03-01T10:00:00+01:00"


def test_data_is_optional(register):
    raw = {k: v for k, v in GOOD.items() if k != "data"}
    assert parse_event(raw, register).data == {}


def test_utc_written_as_z_is_accepted(register):
    event = parse_event({**GOOD, "occurred_at": "2024-12-31T23:30:00Z"}, register)
    assert event.occurred_at == pendulum.datetime(2024, 12, 31, 23, 30, tz="UTC")


@pytest.mark.parametrize("field", ["id", "type", "subject", "occurred_at"])
def test_an_event_missing_a_field_is_refused_naming_the_field(register, field):
    raw = {k: v for k, v in GOOD.items() if k != field}
    assert refusal(register, raw) == f"missing field: {field}"


def test_an_empty_field_counts_as_missing(register):
    assert refusal(register, {**GOOD, "id": ""}) == "missing field: id"


def test_every_missing_field_is_named_at_once(register):
    message = refusal(register, {"data": {}})
    assert message == "missing fields: id, type, subject, occurred_at"


def test_an_unknown_event_type_is_refused_with_the_known_types(register):
    message = refusal(register, {**GOOD, "type": "order.shipped"})
    assert "unknown event type (" in message and "closest known: 'order.closed'" in message
    assert "order.closed" in message and "newsletter.unsubscribed" in message


@pytest.mark.parametrize("naive", ["2026-03-01T10:00:00", "2026-03-01 10:00", "2026-03-01"])
def test_a_time_without_utc_offset_is_refused(register, naive):
    message = refusal(register, {**GOOD, "occurred_at": naive})
    assert "occurred_at has no UTC offset" in message
    assert repr(naive) in message
    assert "Z or +01:00" in message


@pytest.mark.parametrize("bad", ["yesterday", "2026-02-30T10:00:00+01:00", "01/03/2026 10:00"])
def test_a_time_that_is_no_date_is_refused_with_an_example(register, bad):
    message = refusal(register, {**GOOD, "occurred_at": bad})
    assert "occurred_at is not an ISO 8601 date-time" in message
    assert "2026-03-01T10:00:00+01:00" in message


def test_a_timestamp_number_is_refused(register):
    message = refusal(register, {**GOOD, "occurred_at": 1772355600})
    assert "occurred_at must be an ISO 8601 string with a UTC offset" in message


@pytest.mark.parametrize("subject", ["42", ":42"])
def test_a_subject_without_kind_is_refused(register, subject):
    message = refusal(register, {**GOOD, "subject": subject})
    assert "subject must be KIND:ID such as customer:42" in message
    assert "without a kind" in message


def test_a_subject_without_id_is_refused(register):
    message = refusal(register, {**GOOD, "subject": "customer:"})
    assert "subject must be KIND:ID such as customer:42" in message
    assert "without an id" in message


def test_an_unknown_subject_kind_is_refused_with_the_known_kinds(register):
    message = refusal(register, {**GOOD, "subject": "client:42"})
    assert "unknown subject kind (" in message and "'client'" not in message
    assert "customer" in message and "distributor-customer" in message


@pytest.mark.parametrize("line", ["not json", '{"id": "e1", ', "", "{'id': 'e1'}"])
def test_a_line_that_is_not_json_is_refused(register, line):
    assert refusal(register, line).startswith("not valid JSON:")


@pytest.mark.parametrize("raw", ["[1, 2]", '"order.closed"', "42"])
def test_json_that_is_not_an_object_is_refused(register, raw):
    assert "an event is a JSON object" in refusal(register, raw)


@pytest.mark.parametrize(
    ("event_type", "subject"),
    [
        ("order.closed", "candidate:c-1"),
        ("visit.recorded", "candidate:c-1"),
        ("invoice.issued", "prospect:p-1"),
        ("candidate.applied", "customer:42"),
        ("newsletter.subscribed", "distributor-customer:DN-1"),
    ],
)
def test_an_event_no_activity_takes_for_that_kind_is_refused(register, event_type, subject):
    message = refusal(register, {**GOOD, "type": event_type, "subject": subject})
    kind = subject.split(":")[0]
    assert f"no activity of the register takes {event_type!r} for a {kind!r}" in message


def test_a_dispute_may_be_opened_about_any_kind_of_subject(register):
    for subject in ("candidate:c-1", "visitor:v-1", "distributor-customer:DN-1"):
        event = parse_event({**GOOD, "type": "dispute.opened", "subject": subject}, register)
        assert event.type == "dispute.opened"


def test_an_unknown_top_level_field_is_refused_pointing_to_data(register):
    message = refusal(register, {**GOOD, "order": "A-1009"})
    assert "1 unknown field (" in message and "A-1009" not in message
    assert "under 'data'" in message


def test_data_that_is_not_an_object_is_refused(register):
    assert refusal(register, {**GOOD, "data": ["A-1009"]}) == "field data must be a JSON object"


@pytest.mark.parametrize("field", ["id", "type", "subject"])
def test_a_field_that_is_not_text_is_refused(register, field):
    message = refusal(register, {**GOOD, field: 42})
    assert message == f"field {field} must be a string, not int"


def test_an_overlong_id_is_refused(register):
    assert "longer than 200" in refusal(register, {**GOOD, "id": "x" * 201})


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("id", "ev-\x00-1", "field id contains a NUL character"),
        ("subject", "customer:4\x002", "field subject contains a NUL character"),
        ("id", "e" * 201, "field id is longer than 200 characters"),
        ("subject", "customer:" + "4" * 200, "field subject is longer than 200 characters"),
    ],
)
def test_what_the_store_cannot_hold_is_refused_event_by_event(register, field, value, why):
    # One such event must not fail the statement that stores the rest of its batch.
    assert why in refusal(register, {**GOOD, field: value})
