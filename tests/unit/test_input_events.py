"""A producer sends events that are malformed in ways a schema misses; each is refused alone.

Out-of-range dates, JSON cut short, personal data hidden one level down, a register
that cannot be loaded: each gets a reason the producer can act on, never a traceback,
and no reason quotes the personal data it refuses.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from worker import client
from worker.domain.events import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    EventRefused,
    check_subject,
    parse_event,
    parse_instant,
)
from worker.domain.register import LONGEST_KEEP_YEARS, Register
from worker.domain.register_file import RegisterError, default_register_path, parse_register
from worker.domain.retention import lifecycles
from worker.pipeline.delivery import dead_letter_row
from worker.settings import current_settings

EMAIL = "jean.dupont@example.com"
PHONE = "+33 6 12 34 56 78"


def raw_event(at: str = "2026-03-01T10:00:00+01:00", **extra: Any) -> dict[str, Any]:
    return {
        "id": "ev-1",
        "type": "order.closed",
        "subject": "customer:42",
        "occurred_at": at,
        **extra,
    }


# 1. Dates Python (or a deadline computed from them) cannot represent


@pytest.mark.parametrize(
    "at",
    [
        "9999-12-31T23:00:00+01:00",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:00:00-01:00",  # year 10000 in UTC
        "3000-01-01T00:00:00Z",
        "3000-01-01T00:30:00-01:00",  # 3000 in Paris, 3000 in UTC too
        "1899-12-31T23:59:59Z",
        "1900-01-01T00:30:00+01:00",  # 1899 in UTC
    ],
)
def test_an_instant_out_of_the_supported_years_is_refused_with_the_bounds(
    register: Register, at: str
) -> None:
    with pytest.raises(EventRefused) as refused:
        parse_event(raw_event(at), register)
    reason = str(refused.value)
    assert "occurred_at is out of range" in reason
    assert f"from year {EARLIEST_YEAR} to year {LATEST_YEAR} in UTC" in reason


@pytest.mark.parametrize(
    "at",
    ["1900-01-01T00:00:00Z", "2999-12-31T23:59:59Z", "3000-01-01T00:30:00+01:00"],
)
def test_the_bounds_themselves_are_accepted_and_give_a_deadline(
    register: Register, at: str
) -> None:
    event = parse_event(raw_event(at), register)
    found = lifecycles(event.subject, [event], register)
    assert found and all(lc.as_row(event.occurred_at)["deadline_at"] for lc in found)


def test_the_latest_instant_plus_the_longest_keep_is_still_a_date() -> None:
    latest = parse_instant(f"{LATEST_YEAR}-12-31T23:59:59Z")
    assert latest.add(years=LONGEST_KEEP_YEARS, months=1).year < 9999


def test_a_register_keeping_longer_than_the_longest_keep_is_refused_at_its_line() -> None:
    text = default_register_path().read_text(encoding="utf-8")
    broken = text.replace("keep: 5 years", "keep: 20000 years", 1)
    with pytest.raises(RegisterError) as caught:
        parse_register(broken, "reg.yaml")
    line = broken[: broken.index("keep: 20000 years")].count("\n") + 1
    assert any(
        p.line == line and f"longer than {LONGEST_KEEP_YEARS} years" in p.message
        for p in caught.value.problems
    ), caught.value.problems


def test_an_out_of_range_now_names_the_bounds_too() -> None:
    with pytest.raises(EventRefused, match="out of range"):
        parse_instant("9999-12-31T23:00:00+01:00", "--now")


# 7. JSON cut short or malformed: the column is the real one


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_a_json_line_cut_short_reports_the_column_where_it_stops(
    register: Register, ending: str
) -> None:
    line = '{"id": "ev-1", "type": "order.closed",'
    with pytest.raises(EventRefused) as refused:
        parse_event(line + ending, register)
    assert str(refused.value).endswith(f"at column {len(line) + 1}")


def test_a_missing_comma_reports_its_column(register: Register) -> None:
    line = '{"id": "ev-1" "type": "order.closed"}\n'
    with pytest.raises(EventRefused) as refused:
        parse_event(line, register)
    assert str(refused.value) == "not valid JSON: Expecting ',' delimiter at column 15"


def test_a_json_text_on_several_lines_reports_line_and_column(register: Register) -> None:
    with pytest.raises(EventRefused, match="at line 2 column 9$"):
        parse_event('{"id": "ev-1",\n "type" "order.closed"}', register)


# 8 and 3 share it: a subject is KIND:ID, and a malformed one is never quoted


@pytest.mark.parametrize("subject", [EMAIL, "customer:", ":42", ""])
def test_a_malformed_subject_is_refused_without_quoting_it(subject: str) -> None:
    with pytest.raises(EventRefused) as refused:
        check_subject(subject)
    assert "must be KIND:ID" in str(refused.value)
    assert EMAIL not in str(refused.value)


def test_an_unknown_kind_lists_the_kinds_the_register_knows(register: Register) -> None:
    with pytest.raises(EventRefused) as refused:
        check_subject("martian:1", register)
    assert "unknown subject kind (" in str(refused.value)
    assert ", ".join(register.subject_kinds) in str(refused.value)
    assert check_subject("customer:1", register) == "customer"


# 2. Personal data one or more levels down in `data`


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"email": EMAIL}, "data.email"),
        ({"contact": {"email": EMAIL}}, "data.contact.email"),
        ({"phones": [PHONE]}, "data.phones[0]"),
        ({"people": [{"name": "x", "contact": {"tel": PHONE}}]}, "data.people[0].contact.tel"),
        ({"lines": [["ok", EMAIL]]}, "data.lines[0][1]"),
        ({"note": "Call Jean back on 06 12 34 56 78 after 6 pm"}, "data.note"),
    ],
)
def test_an_address_or_phone_number_nested_in_data_is_refused_without_quoting_it(
    data: dict[str, Any], where: str
) -> None:
    with pytest.raises(client.EventInvalid) as refused:
        client._refuse_plain_personal_data(data)
    reason = str(refused.value)
    assert reason.startswith(f"{where} looks like an e-mail address or phone number")
    assert EMAIL not in reason and PHONE not in reason


def test_an_address_used_as_a_key_is_refused_without_quoting_it() -> None:
    with pytest.raises(client.EventInvalid) as refused:
        client._refuse_plain_personal_data({"optins": {EMAIL: True}})
    assert "a key under data.optins looks like an e-mail address" in str(refused.value)
    assert EMAIL not in str(refused.value)


def test_nested_shop_ids_and_keyed_hashes_pass() -> None:
    client._refuse_plain_personal_data(
        {
            "order": {"id": "A-1009", "lines": [{"sku": "SKU-1", "qty": 2}]},
            "contact": {"email_hash": "ab" * 32},
            "tags": ["gift", None, 3, True],
            "invoice": "FA-2026-000123456",
            "note": "2 parcels, order of 2026-11-26, refund 129.90",
        }
    )


@pytest.mark.parametrize("local_id", [EMAIL, "+33612345678", "06 12 34 56 78"])
def test_a_subject_named_by_contact_details_is_refused_without_quoting_it(
    register: Register, local_id: str
) -> None:
    # The subject stays in the event log and the lifecycles until they go: an id only.
    with pytest.raises(EventRefused) as refused:
        parse_event(raw_event(subject=f"customer:{local_id}"), register)
    assert "subject id looks like an e-mail address or phone number" in str(refused.value)
    assert local_id not in str(refused.value)
    assert check_subject("customer:A-1009") == "customer"
    assert check_subject("customer:100000042") == "customer"  # the shop's own numbering


@pytest.mark.parametrize("event_id", [EMAIL, "+33 6 12 34 56 78"])
def test_an_event_id_made_of_contact_details_is_refused_and_not_shown_as_a_dead_letter(
    register: Register, event_id: str
) -> None:
    raw = raw_event(id=event_id)
    with pytest.raises(EventRefused) as refused:
        parse_event(raw, register)
    assert "field id looks like an e-mail address or phone number" in str(refused.value)
    assert event_id not in str(refused.value)
    row = dead_letter_row(raw, str(refused.value), parse_instant("2026-11-26T00:00:00Z"))
    assert row["event_id"] is None and event_id in row["payload"]  # kept whole for a replay
    assert parse_event(raw_event(id="100000042"), register).id == "100000042"


def test_data_nested_deeper_than_the_bound_is_refused() -> None:
    data: dict[str, Any] = {}
    inner = data
    for _ in range(20):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(client.EventInvalid, match="nested more than"):
        client._refuse_plain_personal_data(data)


@pytest.mark.parametrize(
    "value",
    [Decimal("12.5"), date(2026, 1, 1), UUID(int=7), b"raw", float("nan"), float("inf"), "a\x00b"],
)
def test_a_data_value_the_store_cannot_hold_refuses_that_event_alone(
    register: Register, value: Any
) -> None:
    # kombu's serializer carries decimals, dates and UUIDs through to the worker,
    # where the store's JSON column failed the whole batch
    with pytest.raises(EventRefused, match="field data"):
        parse_event(raw_event(data={"amount": value}), register)
    fine = {"amount": "12.5", "n": 3, "x": 1.5, "ok": True, "none": None, "l": [1, "a"]}
    assert parse_event(raw_event(data=fine), register).data == fine


def test_the_client_refuses_a_match_that_is_not_a_string_and_an_empty_time() -> None:
    with pytest.raises(client.EventInvalid, match=r"match\['email'\] must be a string"):
        client.build_event("newsletter.unsubscribed", subject="customer:1", match={"email": None})
    with pytest.raises(client.EventInvalid, match="occurred_at"):
        client.build_event("order.closed", subject="customer:1", occurred_at="")


# 5. LETHE_REGISTER cannot be loaded: the client says where, as `register check` does


@pytest.fixture
def broken_register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nactivities: [\n", encoding="utf-8")
    monkeypatch.setenv("LETHE_REGISTER", str(path))
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    current_settings.cache_clear()
    client._register.cache_clear()
    yield path
    current_settings.cache_clear()
    client._register.cache_clear()


def test_a_broken_register_is_reported_with_its_file_and_line_by_emit_many(
    broken_register: Path,
) -> None:
    with pytest.raises(client.RegisterUnusable) as caught:
        client.emit_many([json.dumps(raw_event())])
    assert f"{broken_register}:3: not valid YAML" in str(caught.value)
    # what the CLI and the shop's code already catch
    assert isinstance(caught.value, client.EventInvalid)
    assert isinstance(caught.value, RegisterError) and caught.value.problems


def test_a_broken_register_is_reported_with_its_file_and_line_by_build_event(
    broken_register: Path,
) -> None:
    with pytest.raises(client.RegisterUnusable, match=f"{broken_register}:3: "):
        client.build_event("order.closed", subject="customer:1")


# 6. occurred_at given as a datetime, as shop code holds it


def test_the_client_takes_an_aware_datetime_and_refuses_a_naive_one_saying_why() -> None:
    from datetime import datetime, timedelta, timezone

    aware = datetime(2024, 3, 31, 2, 30, tzinfo=timezone(timedelta(hours=2)))
    event = client.build_event("order.closed", subject="customer:1", occurred_at=aware)
    assert event.occurred_at == aware
    with pytest.raises(client.EventInvalid, match="occurred_at is a naive datetime"):
        client.build_event(
            "order.closed", subject="customer:1", occurred_at=datetime(2024, 3, 31, 2, 30)
        )
    with pytest.raises(client.EventInvalid, match="timezone-aware datetime .* not date"):
        client.build_event("order.closed", subject="customer:1", occurred_at=date(2024, 3, 31))


def test_an_empty_id_is_refused_as_an_empty_time_is_instead_of_becoming_a_new_one() -> None:
    # a new id on each try would make a retry a second event
    with pytest.raises(client.EventInvalid, match="missing field: id"):
        client.build_event("order.closed", subject="customer:1", id="")


@pytest.mark.parametrize("size", [0, -1, 2.5])
def test_emit_many_refuses_a_batch_size_that_is_no_count_of_events(size: Any) -> None:
    # before: 0 and -1 silently sent one message per event
    with pytest.raises(ValueError, match="batch_size must be a whole number of events"):
        client.emit_many([json.dumps(raw_event())], batch_size=size)
