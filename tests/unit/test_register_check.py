"""A DPO breaks the register the ways people do, and `lethe register check` says where and why.

Each broken register is the shipped one with one piece of text replaced; the
line the error must name is found by locating that text in the broken file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "registers" / "negomarkets.yaml"
SALES_RULE = """    retention:
      - clock: [order.closed]
        ends_on: [erasure.requested]
        keep: 5 years
        then: anonymise
        source: >-
          Durée recommandée par la CNIL : le temps de la relation commerciale et 5
          ans après la fin de la relation
        targets:
          - table: orders
            key: customer_id
            columns:
              ship_name: {constant: Anonymous, pattern: *customer_name}
              ship_street: redact
              ship_postcode: department
              ship_city: redact
              gift_message: null
"""


def lethe() -> str:
    beside = Path(sys.executable).parent / "lethe"
    found = str(beside) if beside.exists() else shutil.which("lethe")
    assert found, "the lethe command is not installed next to this Python"
    return found


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    environment.update(env or {})
    return subprocess.run(
        [lethe(), "register", "check", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


@dataclass(frozen=True)
class Broken:
    path: Path
    line: int  # the line the error must name


def break_register(tmp_path: Path, old: str, new: str, *, at: str | None = None) -> Broken:
    """The shipped register with the first `old` replaced by `new`.

    The expected line is where `new` starts, or where `at` (a piece of `new`) sits.
    """
    text = SHIPPED.read_text(encoding="utf-8")
    start = text.find(old)
    assert start >= 0, f"the shipped register no longer contains {old!r}"
    broken = text[:start] + new + text[start + len(old) :]
    path = tmp_path / "register.yaml"
    path.write_text(broken, encoding="utf-8")
    line = broken.count("\n", 0, start) + 1
    if at is not None:
        line += new[: new.index(at)].count("\n")
        assert at in broken.splitlines()[line - 1]
    return Broken(path, line)


def problems(result: subprocess.CompletedProcess, path: Path) -> list[tuple[int, str]]:
    """(line, message) of every error; each stderr line must be `PATH:LINE: message`."""
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+): (.+)$")
    found = []
    for text in result.stderr.splitlines():
        match = pattern.match(text)
        assert match, f"not a PATH:LINE: message error: {text!r}"
        found.append((int(match.group(1)), match.group(2)))
    assert found, "no error printed"
    return found


def the_problem(result: subprocess.CompletedProcess, broken: Broken) -> str:
    found = problems(result, broken.path)
    assert len(found) == 1, found
    line, message = found[0]
    assert line == broken.line, f"error names line {line}, the mistake is on {broken.line}"
    return message


def test_the_shipped_register_passes():
    result = check(str(SHIPPED))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stderr
    assert "10 activities" in result.stderr


def test_without_a_path_the_register_of_the_settings_is_checked(tmp_path):
    assert check().returncode == 0
    broken = break_register(tmp_path, "then: delete", "then: destroy")
    result = check(env={"LETHE_REGISTER": str(broken.path)})
    assert "unknown end action 'destroy'" in the_problem(result, broken)


def test_an_unknown_event_type_in_a_clock_is_named_with_the_known_ones(tmp_path):
    broken = break_register(
        tmp_path,
        "clock: [candidate.applied, candidate.rejected, contact.made]",
        "clock: [candidate.applied, candidate.rejected, contact.mad]",
    )
    message = the_problem(check(str(broken.path)), broken)
    assert "unknown event type 'contact.mad' in clock" in message
    assert "contact.made" in message


def test_a_misspelled_duration_unit_is_named(tmp_path):
    broken = break_register(tmp_path, "keep: 3 years", "keep: 3 yeers")
    message = the_problem(check(str(broken.path)), broken)
    assert "website.prospects" in message
    assert "bad duration '3 yeers'" in message
    assert "years, months, weeks or days" in message


def test_a_duration_without_unit_is_refused(tmp_path):
    broken = break_register(tmp_path, "keep: 10 years", "keep: 10")
    message = the_problem(check(str(broken.path)), broken)
    assert "crm.invoices" in message
    assert "has no unit" in message


def test_a_bad_distributor_duration_points_at_the_distributor(tmp_path):
    broken = break_register(tmp_path, "DIST-NORD: 3 years", "DIST-NORD: 3 yrs")
    message = the_problem(check(str(broken.path)), broken)
    assert "DIST-NORD" in message
    assert "bad duration '3 yrs'" in message


def test_two_spellings_of_one_distributor_are_refused_at_their_list(tmp_path):
    broken = break_register(tmp_path, "DIST-SUD: 5 years", "dist-nord: 5 years")
    [(line, message)] = problems(check(str(broken.path)), broken.path)
    assert broken.path.read_text(encoding="utf-8").splitlines()[line - 1].strip() == "durations:"
    assert "'DIST-NORD' and 'dist-nord' name the same 'dist-nord'" in message


def test_two_activities_with_the_same_id_are_refused(tmp_path):
    broken = break_register(tmp_path, "  - id: sales", "  - id: crm.customers")
    message = the_problem(check(str(broken.path)), broken)
    assert "duplicate activity id 'crm.customers'" in message


def test_a_table_targeted_twice_for_the_same_kinds_is_refused_at_the_second(tmp_path):
    # a sweep applied only one of them, and the lifecycle was audited erased all the same
    second = (
        "          - table: orders\n"
        "            key: ship_name\n"
        "            columns: {gift_message: null}\n"
    )
    end = "              gift_message: null\n"
    broken = break_register(tmp_path, end, end + second, at="- table: orders")
    message = the_problem(check(str(broken.path)), broken)
    assert "activity 'sales': a second target 'orders'" in message


def test_an_activity_without_retention_key_is_refused_at_the_activity(tmp_path):
    text = SHIPPED.read_text(encoding="utf-8")
    assert text.endswith(SALES_RULE), "the sales rule is no longer last in the register"
    path = tmp_path / "register.yaml"
    path.write_text(text.removesuffix(SALES_RULE), encoding="utf-8")
    line = path.read_text(encoding="utf-8").splitlines().index("  - id: sales") + 1
    message = the_problem(check(str(path)), Broken(path, line))
    assert "'sales'" in message
    assert "every activity needs a retention rule" in message


@pytest.mark.parametrize("empty", ["    retention: []\n", "    retention:\n"])
def test_an_activity_with_an_empty_retention_is_refused(tmp_path, empty):
    broken = break_register(tmp_path, SALES_RULE, empty)
    message = the_problem(check(str(broken.path)), broken)
    assert "'sales'" in message
    assert "retention rule" in message


def test_an_unknown_subject_kind_is_named_with_the_declared_kinds(tmp_path):
    broken = break_register(tmp_path, "subjects: [prospect]", "subjects: [prospects]")
    message = the_problem(check(str(broken.path)), broken)
    assert "unknown subject kind 'prospects'" in message
    assert "distributor-customer" in message


def test_an_unknown_end_action_is_named_with_the_accepted_ones(tmp_path):
    broken = break_register(tmp_path, "then: delete", "then: destroy")
    message = the_problem(check(str(broken.path)), broken)
    assert "website.navigation" in message
    assert "unknown end action 'destroy'" in message
    assert "anonymise, pseudonymise, delete, archive" in message


def test_an_unknown_legal_basis_is_named_with_the_accepted_ones(tmp_path):
    broken = break_register(tmp_path, "legal_basis: consent\n", "legal_basis: consentement\n")
    message = the_problem(check(str(broken.path)), broken)
    assert "unknown legal basis 'consentement'" in message
    assert "legitimate_interest" in message


def test_an_unknown_role_is_named(tmp_path):
    broken = break_register(tmp_path, "role: processor", "role: subcontractor")
    message = the_problem(check(str(broken.path)), broken)
    assert "unknown role 'subcontractor'" in message
    assert "controller or processor" in message


def test_a_misspelled_field_is_named_and_its_absence_reported(tmp_path):
    broken = break_register(tmp_path, "keep: 13 months", "keeep: 13 months")
    found = problems(check(str(broken.path)), broken.path)
    assert (
        broken.line,
        "activity 'website.navigation': retention.keeep: unknown field 'keeep' "
        "(check its spelling)",
    ) in found
    assert any("retention.keep: required field is missing" in message for _, message in found)
    assert len(found) == 2


def test_a_badly_indented_line_is_not_valid_yaml_at_that_line(tmp_path):
    broken = break_register(
        tmp_path,
        "    role: controller\n    controller: NEGOMARKETS\n",
        "    role: controller\n      controller: NEGOMARKETS\n",
        at="controller: NEGOMARKETS",
    )
    assert the_problem(check(str(broken.path)), broken).startswith("not valid YAML")


def test_a_tab_in_the_indentation_is_not_valid_yaml_at_that_line(tmp_path):
    broken = break_register(tmp_path, "    role: controller\n", "\trole: controller\n")
    assert the_problem(check(str(broken.path)), broken).startswith("not valid YAML")


def test_a_key_written_twice_is_refused_at_the_second(tmp_path):
    broken = break_register(
        tmp_path, "keep: 2 years\n", "keep: 2 years\n        keep: 3 years\n", at="keep: 3 years"
    )
    assert (
        the_problem(check(str(broken.path)), broken)
        == "key 'keep' appears twice in the same mapping"
    )


def test_an_unknown_time_zone_is_refused(tmp_path):
    broken = break_register(tmp_path, "timezone: Europe/Paris", "timezone: Europe/Pariss")
    message = the_problem(check(str(broken.path)), broken)
    assert "unknown time zone 'Europe/Pariss'" in message
    assert "IANA" in message


def test_an_unknown_hold_event_is_refused(tmp_path):
    broken = break_register(tmp_path, "place: [dispute.opened]", "place: [dispute.open]")
    assert "unknown event type 'dispute.open' in place" in the_problem(
        check(str(broken.path)), broken
    )


def test_an_unknown_event_in_a_consent_rule_is_refused(tmp_path):
    broken = break_register(
        tmp_path,
        "otherwise_ends_on: [candidate.rejected]",
        "otherwise_ends_on: [candidate.refused]",
    )
    message = the_problem(check(str(broken.path)), broken)
    assert "unknown event type 'candidate.refused' in otherwise_ends_on" in message


def test_a_rule_that_nothing_starts_is_refused(tmp_path):
    broken = break_register(tmp_path, "- clock: [invoice.issued]", "- clock: []")
    message = the_problem(check(str(broken.path)), broken)
    assert "crm.invoices" in message
    assert "needs a clock, opens_on or ends_on event" in message


def test_every_problem_is_reported_in_one_pass(tmp_path):
    first = break_register(tmp_path, "subjects: [prospect]", "subjects: [prospects]")
    text = first.path.read_text(encoding="utf-8")
    second_line = text[: text.index("[invoice.issued]")].count("\n") + 1
    first.path.write_text(text.replace("[invoice.issued]", "[invoice.sent]"), encoding="utf-8")
    found = problems(check(str(first.path)), first.path)
    assert [line for line, _ in found] == [first.line, second_line]
    assert "'prospects'" in found[0][1]
    assert "'invoice.sent'" in found[1][1]


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "register.yaml"
    path.write_text("", encoding="utf-8")
    [(line, message)] = problems(check(str(path)), path)
    assert line == 1
    assert "a register is a mapping" in message


def test_a_missing_file_is_refused_without_a_line(tmp_path):
    path = tmp_path / "nowhere.yaml"
    [(line, message)] = problems(check(str(path)), path)
    assert line == 0
    assert "cannot read the register" in message


def test_a_rule_that_says_delete_with_a_target_that_only_anonymises_is_refused(tmp_path):
    # the art. 30 register would say "delete" while the sweep keeps the rows
    new = SALES_RULE.replace("then: anonymise", "then: delete")
    broken = break_register(tmp_path, SALES_RULE, new, at="- table: orders")
    message = the_problem(check(str(broken.path)), broken)
    assert "activity 'sales': the rule says then: delete, but target 'orders' keeps" in message
    assert "delete_rows: true" in message


INBOUND_CLOCK = "clock: [order.closed, {type: contact.made, when: {direction: inbound}}]"


def test_a_clock_entry_with_an_unknown_type_is_named(tmp_path):
    broken = break_register(
        tmp_path,
        INBOUND_CLOCK,
        "clock: [order.closed, {type: contact.mad, when: {direction: inbound}}]",
    )
    message = the_problem(check(str(broken.path)), broken)
    assert "unknown event type 'contact.mad' in clock" in message
    assert "contact.made" in message


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{type: contact.made, when: inbound}", "a rule entry is an event type, or {type: TYPE"),
        ("{type: contact.made, when: {direction: [inbound]}}", "a rule entry is an event type"),
        ("{typ: contact.made, when: {direction: inbound}}", "unknown field 'typ'"),
        ("{type: contact.made, when: {direction: inbund}}", "'inbund' never matches"),
        ("{type: contact.made, when: {}}", "when is empty"),
    ],
)
def test_a_malformed_when_is_named_with_its_line(tmp_path, entry, expected):
    broken = break_register(tmp_path, INBOUND_CLOCK, f"clock: [order.closed, {entry}]")
    message = the_problem(check(str(broken.path)), broken)
    assert "crm.customers" in message
    assert expected in message


def test_a_when_on_its_own_lines_is_named_at_the_faulty_value(tmp_path):
    broken = break_register(
        tmp_path,
        INBOUND_CLOCK,
        "clock:\n          - order.closed\n          - type: contact.made\n"
        "            when:\n              direction: both",
        at="direction: both",
    )
    message = the_problem(check(str(broken.path)), broken)
    assert "'both' never matches, as contact.made carries data.direction inbound or outbound" in (
        message
    )


def test_a_keyed_hash_under_anonymise_is_refused_at_its_line_with_the_remedy(tmp_path):
    broken = break_register(
        tmp_path,
        "              email: random_email\n              first_name:",
        "              email: keyed_hash\n              first_name:",
        at="keyed_hash",
    )
    message = the_problem(check(str(broken.path)), broken)
    assert "column 'email' uses keyed_hash" in message
    assert "pseudonymisation, not then: anonymise" in message
    assert "random_email" in message and "then: pseudonymise" in message


def test_a_pseudonym_is_allowed_under_then_pseudonymise(tmp_path):
    text = SHIPPED.read_text(encoding="utf-8")
    rule = text[text.index("  - id: distributors.orders") :]
    changed = rule.replace("then: anonymise", "then: pseudonymise", 1).replace(
        "customer_name: {constant: Anonymous, pattern: *customer_name}",
        "customer_name: pseudonym",
        1,
    )
    path = tmp_path / "register.yaml"
    path.write_text(text.replace(rule, changed), encoding="utf-8")
    result = check(str(path))
    assert result.returncode == 0, result.stderr
    # and the same pseudonym under anonymise is refused
    path.write_text(text.replace(rule, changed.replace("then: pseudonymise", "then: anonymise")))
    assert "uses pseudonym" in problems(check(str(path)), path)[0][1]


def test_the_shipped_register_warns_where_kept_invoices_link_anonymised_rows(tmp_path):
    result = check(str(SHIPPED))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if ": warning: " in line]
    linked = {re.search(r"activity '([^']+)', target '([^']+)'", w).groups() for w in warnings}
    assert linked == {
        ("crm.customers", "customers"),
        ("website.accounts", "accounts"),
        ("ambassadors", "ambassadors"),
        ("sales", "orders"),
    }
    assert all("stay pseudonymous until crm.invoices ends" in w for w in warnings)
    customers = next(w for w in warnings if "'customers'" in w)
    line = int(customers.split(":")[1])
    named = SHIPPED.read_text(encoding="utf-8").splitlines()[line - 1]
    assert named.strip() == "- table: customers"


def test_a_pattern_that_is_no_regular_expression_is_refused_at_its_column(tmp_path):
    broken = break_register(
        tmp_path,
        "              last_name: {constant: Anonymous, pattern: *customer_name}",
        "              last_name: {constant: Anonymous, pattern: '^[a-z'}",
    )
    message = the_problem(check(str(broken.path)), broken)
    assert "pattern of column 'last_name' is not a regular expression" in message


def test_a_misspelled_constant_is_refused_at_its_column(tmp_path):
    broken = break_register(
        tmp_path,
        "              last_name: {constant: Anonymous, pattern: *customer_name}",
        "              last_name: {constnat: Anonymous}",
    )
    message = the_problem(check(str(broken.path)), broken)
    assert "unknown field 'constnat'" in message


def test_simulate_names_a_pseudonymise_rule_as_such(tmp_path):
    text = SHIPPED.read_text(encoding="utf-8")
    rule = text[text.index("  - id: distributors.orders") :]
    path = tmp_path / "register.yaml"
    path.write_text(text.replace(rule, rule.replace("then: anonymise", "then: pseudonymise", 1)))
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"id": "e1", "type": "order.closed", "subject": "distributor-customer:DN-501", '
        '"occurred_at": "2023-12-31T23:59:00+01:00", "data": {"distributor": "DIST-NORD"}}\n'
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    result = subprocess.run(
        [lethe(), "simulate", str(events), "--register", str(path)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (lifecycle,) = json.loads(result.stdout)
    assert (lifecycle["activity"], lifecycle["then"]) == ("distributors.orders", "pseudonymise")


def test_a_constant_that_breaks_its_columns_pattern_is_refused_at_its_column(tmp_path):
    broken = break_register(
        tmp_path,
        "              last_name: {constant: Anonymous, pattern: *customer_name}",
        "              last_name: {constant: Anonyme 1, pattern: *customer_name}",
    )
    message = the_problem(check(str(broken.path)), broken)
    assert "the constant 'Anonyme 1' of column 'last_name' does not match" in message


def test_the_ok_line_comes_first_and_warnings_after_it():
    lines = check(str(SHIPPED)).stderr.splitlines()
    assert lines[0].startswith(f"{SHIPPED}: ok")
    assert lines[1:] and all(": warning: " in line for line in lines[1:])
