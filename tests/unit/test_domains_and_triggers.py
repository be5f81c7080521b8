"""What the shop check reads from PostgreSQL's rendering of a domain's CHECK and from
SQLite's CREATE TRIGGER text: pure string work, tried here on the awkward cases."""

from __future__ import annotations

from worker.shop.constraints import Check, outer_parentheses_off, value_as
from worker.shop.triggers import FiredTriggers, Trigger, sqlite_trigger


def test_value_becomes_the_column_where_it_is_the_keyword_alone():
    check = "((VALUE)::text ~ '^[0-9]{5}$'::text)"
    assert value_as(check, "postcode") == "((postcode)::text ~ '^[0-9]{5}$'::text)"
    assert value_as("length(VALUE) > 3", '"Post Code"') == 'length("Post Code") > 3'


def test_value_inside_a_literal_a_quoted_name_or_a_longer_name_stays():
    check = "((VALUE)::text <> 'VALUE, it''s VALUE'::text) AND \"VALUE\"(VALUE) AND value_ok(VALUE)"
    assert value_as(check, "pc") == (
        "((pc)::text <> 'VALUE, it''s VALUE'::text) AND \"VALUE\"(pc) AND value_ok(pc)"
    )
    assert value_as("VALUES_X > 0 AND x.VALUE > 0", "pc") == "VALUES_X > 0 AND x.VALUE > 0"


def test_only_parentheses_around_the_whole_check_come_off():
    assert outer_parentheses_off("((pc)::text ~ 'x'::text)") == "(pc)::text ~ 'x'::text"
    assert outer_parentheses_off("(((a > 0)))") == "a > 0"
    assert outer_parentheses_off("(a > 0) AND (b > 0)") == "(a > 0) AND (b > 0)"
    assert outer_parentheses_off("(a <> ')(')") == "a <> ')('"


def test_a_domains_check_names_its_domain():
    check = Check("pc_check", "(pc)::text ~ 'x'::text", frozenset({"pc"}), "postcode_fr")
    assert str(check) == "CHECK constraint pc_check ((pc)::text ~ 'x'::text) on domain postcode_fr"
    assert str(Check(None, "a > 0", frozenset({"a"}))) == "CHECK constraint (a > 0)"


def test_a_sqlite_triggers_event_is_read_past_its_name():
    events = {
        "CREATE TRIGGER audit AFTER UPDATE ON customers BEGIN SELECT 1; END": "UPDATE",
        "create temp trigger if not exists main.log before delete on t begin select 1; end": (
            "DELETE"
        ),
        'CREATE TRIGGER "after update" INSERT ON t BEGIN SELECT 1; END': "INSERT",
        "CREATE TRIGGER [delete me] INSTEAD OF UPDATE OF email ON v BEGIN SELECT 1; END": "UPDATE",
        "CREATE TRIGGER updates\nAFTER\tDELETE ON t BEGIN SELECT 1; END": "DELETE",
    }
    for sql, event in events.items():
        assert sqlite_trigger("t", sql).events == {event}, sql


def test_a_trigger_whose_text_cannot_be_read_is_warned_about_rather_than_missed():
    unread = sqlite_trigger("t", "CREATE TRIGGER")
    assert unread.events == {"UPDATE", "DELETE"} and unread.update_of is None
    assert unread.fired_by("UPDATE", ["email"]) and unread.fired_by("DELETE")


def test_an_update_of_trigger_fires_only_when_a_sweep_writes_one_of_its_columns():
    sql = 'CREATE TRIGGER t AFTER UPDATE OF "E-mail", [Phone] ,city ON c BEGIN SELECT 1; END'
    trigger = sqlite_trigger("t", sql)
    assert trigger.update_of == {"e-mail", "phone", "city"}
    assert trigger.fired_by("UPDATE", ["PHONE", "street"])
    assert not trigger.fired_by("UPDATE", ["street", "postcode"])
    assert not trigger.fired_by("DELETE"), "an UPDATE trigger is not run by a DELETE"
    quoted = sqlite_trigger("t", "CREATE TRIGGER t UPDATE OF `a``b`, 'c''d' ON x BEGIN END")
    assert quoted.update_of == {"a`b", "c'd"}
    # a trigger on any UPDATE, or on a DELETE, fires whatever the columns
    assert Trigger("any", frozenset({"UPDATE"})).fired_by("UPDATE", ["street"])
    assert Trigger("gone", frozenset({"DELETE"})).fired_by("DELETE")


def test_the_warning_names_table_triggers_writes_and_remedy():
    said = str(FiredTriggers("invoices", ("invoices_audit", "log"), ("UPDATE", "DELETE")))
    assert said.startswith(
        "warning: table 'invoices' has triggers that run when a sweep updates and deletes its "
        "rows (invoices_audit, log): "
    )
    assert said.endswith("that table needs a target of its own")
