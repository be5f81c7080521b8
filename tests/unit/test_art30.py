"""The DPO renders the art. 30 register from the file Lethe enforces, for the CNIL."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.domain.art30 import CSV_COLUMNS, render
from worker.domain.register import LEGAL_BASIS_LABELS, Purpose, Register
from worker.domain.register_file import load_register, parse_register

REGISTER_PATH = Path(__file__).resolve().parents[2] / "registers" / "negomarkets.yaml"
FORMATS = ("md", "csv", "html")
PROCESSOR_HEADING = "Activities as processor (art. 30(2))"
CONTROLLER_HEADING = "Activities as controller (art. 30(1))"


@pytest.fixture(scope="module")
def register() -> Register:
    return load_register(REGISTER_PATH)


def _as_written(fmt: str) -> Callable[[str], str]:
    """How a register text shows in `fmt`'s output."""
    return html.escape if fmt == "html" else str


def _legal_basis_texts(purpose: Purpose, fmt: str) -> list[str]:
    label = LEGAL_BASIS_LABELS[purpose.legal_basis]
    if not purpose.legal_basis_text:
        return [label]
    # CSV keeps one cell per value: the register's wording only.
    return [purpose.legal_basis_text] if fmt == "csv" else [purpose.legal_basis_text, label]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_activity_purpose_legal_basis_and_retention_is_in_the_register(
    register: Register, fmt: str
) -> None:
    shown = render(register, fmt)
    written = _as_written(fmt)
    expected: list[str] = []
    for activity in register.activities:
        expected += [activity.id, activity.name, *activity.data]
        for purpose in activity.purposes:
            expected.append(purpose.purpose)
            expected += _legal_basis_texts(purpose, fmt)
        for rule in activity.retention:
            expected += [str(rule.keep), rule.source, rule.then]
            if rule.keep_by:
                expected += [f"{name}: {keep}" for name, keep in rule.keep_by.durations.items()]
            expected += [e.type for e in (*rule.clock, *rule.opens_on, *rule.ends_on)]
    missing = [text for text in expected if written(text) not in shown]
    assert missing == []


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_the_header_names_the_register_controller_and_time_zone(
    register: Register, fmt: str
) -> None:
    shown = render(register, fmt)
    for text in (
        register.name,
        register.controller.name,
        register.controller.contact,
        register.timezone,
    ):
        assert text and _as_written(fmt)(text) in shown


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_processor_activities_come_after_the_art_30_2_heading(register: Register, fmt: str) -> None:
    shown = render(register, fmt)
    processor_at = shown.index(_as_written(fmt)(PROCESSOR_HEADING))
    assert shown.index(_as_written(fmt)(CONTROLLER_HEADING)) < processor_at
    roles = {a.role for a in register.activities}
    assert roles == {"controller", "processor"}, "the seed has both kinds of activity"
    for activity in register.activities:
        first_seen = shown.index(activity.id)
        if activity.role == "processor":
            assert first_seen > processor_at, activity.id
        else:
            assert first_seen < processor_at, activity.id


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_a_processor_activity_names_the_controller_it_acts_for(
    register: Register, fmt: str
) -> None:
    shown = render(register, fmt)
    processor_part = shown[shown.index(_as_written(fmt)(PROCESSOR_HEADING)) :]
    for activity in register.activities:
        if activity.role == "processor":
            assert _as_written(fmt)(activity.controller) in processor_part


def test_csv_has_one_row_per_activity_and_purpose(register: Register) -> None:
    rows = list(csv.DictReader(io.StringIO(render(register, "csv"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    expected = [
        (a.role, a.id, a.controller, "; ".join(a.data), p.purpose)
        for a in sorted(register.activities, key=lambda a: a.role != "controller")
        for p in a.purposes
    ]
    got = [
        (r["role"], r["activity_id"], r["controller"], r["data_categories"], r["purpose"])
        for r in rows
    ]
    assert got == expected
    by_id = {a.id: a for a in register.activities}
    for row in rows:
        activity = by_id[row["activity_id"]]
        assert row["end_action"] == " | ".join(r.then for r in activity.retention)
        assert row["retention_source"] == " | ".join(r.source for r in activity.retention)
        assert all(str(r.keep) in row["retention"] for r in activity.retention)


def test_html_is_a_self_contained_printable_french_page(register: Register) -> None:
    page = render(register, "html")
    assert page.startswith("<!DOCTYPE html>")
    assert '<html lang="fr">' in page
    assert '<meta charset="utf-8">' in page
    for outside in ("<script", "<link", "src=", "http://", "https://"):
        assert outside not in page


def test_html_escapes_what_the_register_says(register: Register) -> None:
    newsletter = register.activity("newsletter")
    hostile = "<script>alert('x')</script> & co"
    purposes = [newsletter.purposes[0].model_copy(update={"purpose": hostile})]
    activities = [
        a.model_copy(update={"purposes": purposes}) if a.id == "newsletter" else a
        for a in register.activities
    ]
    page = render(register.model_copy(update={"activities": activities}), "html")
    assert "<script" not in page
    assert html.escape(hostile) in page


def test_markdown_keeps_a_pipe_inside_its_table_cell(register: Register) -> None:
    sales = register.activity("sales")
    purposes = [sales.purposes[0].model_copy(update={"purpose": "orders | returns"})]
    activities = [
        a.model_copy(update={"purposes": purposes}) if a.id == "sales" else a
        for a in register.activities
    ]
    page = render(register.model_copy(update={"activities": activities}), "md")
    assert "orders \\| returns" in page


def test_an_unknown_format_is_refused(register: Register) -> None:
    with pytest.raises(ValueError, match="md, csv, html"):
        render(register, "pdf")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_clock_on_the_persons_own_contact_reads_in_words(register: Register, fmt: str) -> None:
    shown = render(register, fmt)
    # website.prospects: CNIL "dernier contact émanant du prospect"
    assert "after the last contact.made from the person" in shown
    assert "after the latest of order.closed, contact.made from the person" in shown
    # recruitment counts contact both ways, so its entry carries no words about direction
    assert "candidate.rejected, contact.made;" in shown
    assert "direction" not in _retention_cells(shown)


def _retention_cells(shown: str) -> str:
    # the clocks, without the catalogue of events at the end (which explains data.direction)
    return shown.split("contact.made` |")[0] if "contact.made` |" in shown else shown[:-3000]


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_anonymised_rows_linked_by_kept_invoices_are_said_pseudonymised_until_then(
    register: Register, fmt: str
) -> None:
    text = render(register, fmt)
    said = "anonymised once crm.invoices ends; pseudonymised until then"
    assert text.count(said) == 4  # crm.customers, website.accounts, ambassadors, sales
    # a prospect's row has no kept invoice pointing at it: anonymised, no more said
    prospects = text[text.index("website.prospects") : text.index("website.accounts")]
    assert "anonymise" in prospects and said not in prospects


def test_then_pseudonymise_is_named_as_pseudonymisation() -> None:
    text = REGISTER_PATH.read_text(encoding="utf-8")
    rule = text[text.index("  - id: distributors.orders") :]
    changed = rule.replace("then: anonymise", "then: pseudonymise", 1)
    pseudonymised = parse_register(text.replace(rule, changed))
    rendered = render(pseudonymised, "md")
    part = rendered[rendered.index("distributors.orders") :]
    assert "pseudonymise (pseudonymised data, GDPR art. 4(5): still personal data)" in part
