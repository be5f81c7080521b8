"""Which columns a constraint's SQL names: what decides whether a strategy is checked
against it."""

from __future__ import annotations

from worker.shop.constraints import named_in

COLUMNS = ["email", "email_verified", "Nick", "born"]


def test_a_column_is_named_as_a_whole_word_whatever_the_case_or_quotes():
    assert named_in("lower((email)::text)", COLUMNS) == {"email"}
    assert named_in('char_length("Nick") > 2', COLUMNS) == {"Nick"}
    assert named_in("NICK <> ''", COLUMNS) == {"Nick"}
    assert named_in("contacts.born >= '1900-01-01'", COLUMNS) == {"born"}


def test_a_name_within_a_longer_one_is_not_the_column():
    assert named_in("email_verified IN (0, 1)", COLUMNS) == {"email_verified"}
    assert named_in("unborn_total > 0", COLUMNS) == set()
