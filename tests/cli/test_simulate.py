"""`lethe simulate`: the DPO previews, from a file of shop events, what will be erased and when."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = "samples/events.jsonl"
NOW = "2026-11-26T00:00:00+01:00"
FIELDS = ["subject", "activity", "anchor_at", "deadline_at", "state", "then"]


def lethe() -> str:
    beside = Path(sys.executable).parent / "lethe"
    found = str(beside) if beside.exists() else shutil.which("lethe")
    assert found, "the lethe command is not installed next to this Python"
    return found


def simulate(*args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    return subprocess.run(
        [lethe(), "simulate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=60,
    )


@pytest.fixture(scope="module")
def sample_run() -> subprocess.CompletedProcess:
    return simulate(SAMPLES, "--now", NOW)


@pytest.fixture(scope="module")
def rows(sample_run) -> list[dict]:
    assert sample_run.returncode == 0, sample_run.stderr
    return json.loads(sample_run.stdout)


def row(rows: list[dict], subject: str, activity: str) -> dict:
    found = [r for r in rows if r["subject"] == subject and r["activity"] == activity]
    assert len(found) == 1, f"{len(found)} rows for {subject} / {activity}"
    return found[0]


def test_the_sample_events_give_a_json_array_and_exit_0(sample_run, rows):
    assert sample_run.returncode == 0
    assert isinstance(rows, list) and rows
    assert "refused" not in sample_run.stderr


def test_every_row_has_exactly_the_contract_fields(rows):
    for r in rows:
        assert list(r) == FIELDS


def test_rows_are_sorted_by_subject_then_activity(rows):
    keys = [(r["subject"], r["activity"]) for r in rows]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys), "one row per subject and activity"


@pytest.mark.parametrize(
    "expected",
    [
        # 2020-02-29 + 5 years: the last day of February 2025
        [
            "customer:42",
            "sales",
            "2020-02-29T10:00:00+01:00",
            "2025-02-28T10:00:00+01:00",
            "due",
            "anonymise",
        ],
        [
            "customer:42",
            "crm.invoices",
            "2020-02-29T10:05:00+01:00",
            "2030-02-28T10:05:00+01:00",
            "active",
            "delete",
        ],
        # the latest of the order (2020) and the contact (2021) starts the clock
        [
            "customer:42",
            "crm.customers",
            "2021-03-28T01:30:00+01:00",
            "2026-03-28T01:30:00+01:00",
            "due",
            "anonymise",
        ],
        [
            "customer:42",
            "newsletter",
            "2024-05-01T20:12:00+02:00",
            "2024-05-01T20:12:00+02:00",
            "due",
            "delete",
        ],
        # a dispute is open: held although the deadline has passed
        [
            "customer:43",
            "sales",
            "2021-01-31T23:30:00+01:00",
            "2026-01-31T23:30:00+01:00",
            "held",
            "anonymise",
        ],
        [
            "customer:43",
            "website.accounts",
            "2021-01-31T23:30:00+01:00",
            "2026-01-31T23:30:00+01:00",
            "held",
            "anonymise",
        ],
        # an erasure request ends everything the law does not keep...
        [
            "customer:44",
            "website.accounts",
            "2026-10-01T16:00:00+02:00",
            "2026-10-01T16:00:00+02:00",
            "due",
            "anonymise",
        ],
        # ...but not the invoices
        [
            "customer:44",
            "crm.invoices",
            "2019-07-01T12:00:00+02:00",
            "2029-07-01T12:00:00+02:00",
            "active",
            "delete",
        ],
        # ordered from Montreal at 15:00 -05:00: 21:00 in Paris
        [
            "customer:45",
            "sales",
            "2024-02-29T21:00:00+01:00",
            "2029-02-28T21:00:00+01:00",
            "active",
            "anonymise",
        ],
        ["visitor:v-1002", "newsletter", "2026-06-02T09:16:30+02:00", None, "active", "delete"],
        [
            "visitor:v-1002",
            "website.navigation",
            "2026-06-02T09:15:00+02:00",
            "2027-07-02T09:15:00+02:00",
            "active",
            "delete",
        ],
        [
            "visitor:v-1001",
            "website.navigation",
            "2025-09-14T18:22:05+02:00",
            "2026-10-14T18:22:05+02:00",
            "due",
            "delete",
        ],
        [
            "distributor-customer:DN-501",
            "distributors.orders",
            "2023-12-31T23:59:00+01:00",
            "2026-12-31T23:59:00+01:00",
            "active",
            "anonymise",
        ],
        [
            "distributor-customer:XX-9",
            "distributors.orders",
            "2023-12-31T23:59:00+01:00",
            "2028-12-31T23:59:00+01:00",
            "active",
            "anonymise",
        ],
        # rejected without consent: erased at the rejection
        [
            "candidate:c-1",
            "recruitment",
            "2026-09-20T10:00:00+02:00",
            "2026-09-20T10:00:00+02:00",
            "due",
            "delete",
        ],
        # rejected with data.keep true: 2 years
        [
            "candidate:c-2",
            "recruitment",
            "2025-03-03T10:00:00+01:00",
            "2027-03-03T10:00:00+01:00",
            "active",
            "delete",
        ],
        # consented after the rejection: 2 years after the rejection
        [
            "candidate:c-3",
            "recruitment",
            "2024-04-19T09:00:00+02:00",
            "2026-04-19T09:00:00+02:00",
            "due",
            "delete",
        ],
        [
            "prospect:p-2001",
            "website.prospects",
            "2023-05-10T14:00:00+02:00",
            "2026-05-10T14:00:00+02:00",
            "due",
            "anonymise",
        ],
        [
            "prospect:p-2002",
            "website.prospects",
            "2025-11-03T11:45:00+01:00",
            "2028-11-03T11:45:00+01:00",
            "active",
            "anonymise",
        ],
        [
            "ambassador:a-7",
            "ambassadors",
            "2021-01-31T18:00:00+01:00",
            "2026-01-31T18:00:00+01:00",
            "due",
            "anonymise",
        ],
    ],
    ids=lambda expected: f"{expected[0]}/{expected[1]}",
)
def test_a_sample_row_is_what_the_register_says(rows, expected):
    assert row(rows, expected[0], expected[1]) == dict(zip(FIELDS, expected, strict=True))


def test_every_lifecycle_of_a_disputed_customer_is_held(rows):
    held = [r for r in rows if r["subject"] == "customer:43"]
    assert held and all(r["state"] == "held" for r in held)


def test_an_event_id_sent_twice_counts_once_as_the_store_keeps_it(tmp_path):
    # The store keeps the first copy of an event id and counts any other as a duplicate,
    # whatever it says: a copy dated later, or about another subject, changes nothing.
    first = {
        "id": "o-1",
        "type": "order.closed",
        "subject": "customer:42",
        "occurred_at": "2020-02-29T10:00:00+01:00",
    }
    copies = [
        first,
        {**first, "occurred_at": "2022-06-01T10:00:00+02:00"},
        {**first, "subject": "customer:99"},
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in copies), encoding="utf-8")
    result = simulate(str(events), "--now", NOW)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["subject"] for r in rows} == {"customer:42"}
    assert row(rows, "customer:42", "sales")["deadline_at"] == "2025-02-28T10:00:00+01:00"


def test_the_order_of_the_lines_changes_nothing(tmp_path, sample_run):
    lines = (REPO / SAMPLES).read_text(encoding="utf-8").splitlines(keepends=True)
    reversed_file = tmp_path / "reversed.jsonl"
    reversed_file.write_text("".join(reversed(lines)), encoding="utf-8")
    again = simulate(str(reversed_file), "--now", NOW)
    assert again.returncode == 0, again.stderr
    assert again.stdout == sample_run.stdout


def test_the_state_depends_on_now(rows):
    earlier = json.loads(simulate(SAMPLES, "--now", "2025-02-28T09:59:59+01:00").stdout)
    assert row(earlier, "customer:42", "sales")["state"] == "active"
    assert row(rows, "customer:42", "sales")["state"] == "due"


def test_bad_lines_are_refused_with_their_line_and_the_rest_is_still_computed(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                '{"id": "e1", "type": "order.closed", "subject": "customer:42", '
                '"occurred_at": "2020-02-29T10:00:00+01:00"}',
                "this is not json",
                "",
                '{"id": "e3", "type": "order.shipped", "subject": "customer:42", '
                '"occurred_at": "2020-03-01T10:00:00+01:00"}',
                '{"id": "e4", "type": "contact.made", "subject": "prospect:p-1", '
                '"occurred_at": "2025-11-03T11:45:00"}',
                '{"id": "e5", "type": "contact.made", "subject": "42", '
                '"occurred_at": "2025-11-03T11:45:00+01:00"}',
                '{"id": "e6", "type": "contact.made", "subject": "prospect:p-2", '
                '"occurred_at": "2025-11-03T11:45:00+01:00", "data": {"direction": "inbound"}}',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = simulate(str(events), "--now", NOW)
    assert result.returncode == 3
    refusals = [line for line in result.stderr.splitlines() if ": refused: " in line]
    assert [line.split(": refused: ")[0] for line in refusals] == [
        f"{events}:2",
        f"{events}:4",
        f"{events}:5",
        f"{events}:6",
    ]
    reasons = [line.split(": refused: ", 1)[1] for line in refusals]
    assert reasons[0].startswith("not valid JSON")
    assert "unknown event type (" in reasons[1] and "closest known: 'order.closed'" in reasons[1]
    assert "no UTC offset" in reasons[2]
    assert "subject must be KIND:ID" in reasons[3]
    assert "4 event(s) refused out of 6" in result.stderr

    rows = json.loads(result.stdout)
    assert [(r["subject"], r["activity"]) for r in rows] == [
        ("customer:42", "crm.customers"),
        ("customer:42", "sales"),
        ("customer:42", "website.accounts"),
        ("prospect:p-2", "website.prospects"),
    ]
    assert row(rows, "customer:42", "sales")["deadline_at"] == "2025-02-28T10:00:00+01:00"


def test_now_without_an_offset_is_rejected_clearly():
    result = simulate(SAMPLES, "--now", "2026-11-26T00:00:00")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--now" in result.stderr
    assert "no UTC offset" in result.stderr


def test_now_that_is_no_date_is_rejected_clearly():
    result = simulate(SAMPLES, "--now", "tomorrow")
    assert result.returncode == 2
    assert "--now" in result.stderr
    assert "ISO 8601" in result.stderr


def test_a_broken_register_stops_the_simulation_with_its_errors(tmp_path):
    register = tmp_path / "register.yaml"
    text = (REPO / "registers" / "negomarkets.yaml").read_text(encoding="utf-8")
    register.write_text(text.replace("then: delete", "then: destroy", 1), encoding="utf-8")
    result = simulate(SAMPLES, "--register", str(register), "--now", NOW)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{register}:")
    assert "unknown end action 'destroy'" in result.stderr


def test_another_register_gives_other_deadlines(tmp_path):
    register = tmp_path / "register.yaml"
    text = (REPO / "registers" / "negomarkets.yaml").read_text(encoding="utf-8")
    register.write_text(text.replace("DIST-NORD: 3 years", "DIST-NORD: 2 years"), encoding="utf-8")
    result = simulate(SAMPLES, "--register", str(register), "--now", NOW)
    assert result.returncode == 0, result.stderr
    dn = row(json.loads(result.stdout), "distributor-customer:DN-501", "distributors.orders")
    assert dn["deadline_at"] == "2025-12-31T23:59:00+01:00"
    assert dn["state"] == "due"


def test_a_dispute_whose_case_is_an_address_or_a_phone_is_refused_without_echoing_it(tmp_path):
    # The case id is the one payload a dispute keeps after the erasure: it must be the
    # shop's case number, never who the dispute is with.
    address, phone = "jean.dupont@example.fr", "06 12 34 56 78"
    lines = [
        {"id": "o1", "type": "order.closed", "subject": "customer:42", "data": {}},
        {"id": "d1", "type": "dispute.opened", "subject": "customer:42", "data": {"case": address}},
        {"id": "d2", "type": "dispute.opened", "subject": "customer:42", "data": {"case": phone}},
        {"id": "d3", "type": "dispute.closed", "subject": "customer:42", "data": {"case": address}},
        {"id": "d4", "type": "dispute.opened", "subject": "customer:7", "data": {"case": "LIT-3"}},
        {"id": "o2", "type": "order.closed", "subject": "customer:7", "data": {}},
    ]
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(json.dumps({**e, "occurred_at": "2020-02-29T10:00:00+01:00"}) + "\n" for e in lines)
    )
    result = simulate(str(events), "--now", NOW)
    assert result.returncode == 3, result.stderr
    refusals = [line for line in result.stderr.splitlines() if ": refused: " in line]
    assert [line.split(": refused: ")[0] for line in refusals] == [
        f"{events}:{n}" for n in (2, 3, 4)
    ]
    assert all("data.case looks like an e-mail address or phone number" in r for r in refusals)
    assert address not in result.stderr and phone not in result.stderr
    states = {(r["subject"], r["state"]) for r in json.loads(result.stdout)}
    assert states == {("customer:42", "due"), ("customer:7", "held")}


# Contact direction: samples/contact-direction.jsonl tells the two stories
STORIES = "samples/contact-direction.jsonl"


@pytest.mark.parametrize(
    ("subject", "activity", "anchor_at", "deadline_at"),
    [
        # wrote in February 2023, called by the shop in June 2025: due since February 2026
        (
            "prospect:p-3001",
            "website.prospects",
            "2023-02-14T10:00:00+01:00",
            "2026-02-14T10:00:00+01:00",
        ),
        # last order March 2020, the shop's e-mail logged January 2024: due since March 2025
        (
            "customer:3002",
            "crm.customers",
            "2020-03-10T11:00:00+01:00",
            "2025-03-10T11:00:00+01:00",
        ),
        (
            "customer:3002",
            "website.accounts",
            "2020-03-10T11:00:00+01:00",
            "2025-03-10T11:00:00+01:00",
        ),
        # the same e-mail written by the customer renews the relationship
        (
            "customer:3003",
            "crm.customers",
            "2024-01-22T09:00:00+01:00",
            "2029-01-22T09:00:00+01:00",
        ),
    ],
)
def test_only_the_persons_own_contact_renews_the_clock(subject, activity, anchor_at, deadline_at):
    result = simulate(STORIES, "--now", NOW)
    assert result.returncode == 0, result.stderr
    found = row(json.loads(result.stdout), subject, activity)
    assert (found["anchor_at"], found["deadline_at"]) == (anchor_at, deadline_at)
    assert found["state"] == ("active" if deadline_at > "2026-11" else "due")


def test_a_contact_without_a_direction_is_refused_with_its_line(tmp_path):
    events = tmp_path / "events.jsonl"
    lines = [
        {"id": "c1", "type": "contact.made", "data": {"direction": "inbound"}},
        {"id": "c2", "type": "contact.made"},
        {"id": "c3", "type": "contact.made", "data": {"direction": "jean.dupont@example.fr"}},
        {"id": "c4", "type": "contact.made", "data": {"direction": "outbound"}},
    ]
    events.write_text(
        "".join(
            json.dumps({**e, "subject": "prospect:p-9", "occurred_at": "2025-06-12T15:00:00+02:00"})
            + "\n"
            for e in lines
        )
    )
    result = simulate(str(events), "--now", NOW)
    assert result.returncode == 3
    refusals = [line for line in result.stderr.splitlines() if ": refused: " in line]
    assert [line.split(": refused: ")[0] for line in refusals] == [f"{events}:2", f"{events}:3"]
    assert "contact.made needs data.direction: send inbound (the person wrote" in refusals[0]
    assert "data.direction of contact.made is not one of inbound, outbound" in refusals[1]
    assert "jean.dupont" not in result.stderr
    # the two accepted contacts still count: the inbound one starts the 3 years
    assert row(json.loads(result.stdout), "prospect:p-9", "website.prospects")["deadline_at"] == (
        "2028-06-12T15:00:00+02:00"
    )
