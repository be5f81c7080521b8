"""The unlinkable strategies: a constant, a random value, a random address; and a column's
own rule (`pattern:`) refusing what a strategy cannot write."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from worker.domain.hashing import (
    legacy_subject_ref,
    legacy_value_hash,
    purpose_key,
    subject_ref,
    subject_refs,
    value_hash,
    value_hashes,
)
from worker.domain.patterns import pattern_problem
from worker.domain.strategies import (
    LINKABLE,
    STRATEGIES,
    UNLINKABLE,
    ColumnFacts,
    Context,
    apply,
    column_problem,
)

SECRET = b"test-secret-0123456789"
# PrestaShop's Validate::isCustomerName, as the shipped register writes it
CUSTOMER_NAME = '^[^0-9!<>,;?=+()@#"°{}_$%:]*$'
NAME = ColumnFacts("first_name", "text", 100, nullable=False)
EMAIL = ColumnFacts("email", "text", 254, nullable=False, unique=True)


def ctx(column: ColumnFacts, subject: str = "customer:42", constant: str | None = None):
    return Context(SECRET, subject, column, constant)


def test_constant_writes_the_registers_value_and_leaves_null_alone():
    assert apply("constant", "Jeanne", ctx(NAME, constant="Anonymous")) == "Anonymous"
    assert apply("constant", "Anonymous", ctx(NAME, constant="Anonymous")) == "Anonymous"
    assert apply("constant", None, ctx(NAME, constant="Anonymous")) is None


def test_a_constant_longer_than_the_column_is_refused():
    short = ColumnFacts("first_name", "text", 5)
    assert "choose a shorter one" in column_problem("constant", short, True, "Anonymous")
    assert column_problem("constant", NAME, True, "Anonymous") is None
    assert "is UNIQUE" in column_problem("constant", EMAIL, True, "Anonymous")


def test_random_differs_per_row_and_per_run_and_owes_nothing_to_the_person():
    column = ColumnFacts("login", "text", 254, unique=True)
    drawn = [apply("random", "jeanne", ctx(column, f"customer:{n % 3}")) for n in range(2000)]
    # the same value and subject never give the same output twice: a UNIQUE column holds
    assert len(set(drawn)) == len(drawn)
    assert all(re.fullmatch("[a-p]{32}", d) for d in drawn)
    assert column_problem("random", column, one_row_per_subject=False) is None


def test_random_fits_the_columns_length_and_type():
    assert len(apply("random", "Jeanne Martin", ctx(ColumnFacts("n", "text", 20)))) == 20
    number = apply("random", 42, ctx(ColumnFacts("n", "integer", integer_bits=16)))
    assert isinstance(number, int) and 0 < number < 2**15
    assert apply("random", None, ctx(NAME)) is None


def test_random_is_refused_where_its_values_would_soon_collide():
    narrow = ColumnFacts("code", "text", 8, unique=True)
    assert "too narrow" in column_problem("random", narrow, True)
    assert "too narrow" in column_problem("random", ColumnFacts("n", "integer", unique=True), True)
    wide = ColumnFacts("n", "integer", unique=True, integer_bits=64)
    assert column_problem("random", wide, True) is None


def test_random_email_is_an_undeliverable_address_and_leaves_its_own_output():
    once = apply("random_email", "jeanne@example.org", ctx(EMAIL))
    assert re.fullmatch(r"[a-p]{32}@erased\.invalid", once)
    # idempotent: an erased address is not drawn again
    assert apply("random_email", once, ctx(EMAIL)) == once
    assert apply("random_email", "jeanne@example.org", ctx(EMAIL)) != once
    assert len(apply("random_email", "x@y.z", ctx(ColumnFacts("e", "text", 40)))) == 40
    narrow = ColumnFacts("e", "text", 20)
    assert "holds 20 characters" in column_problem("random_email", narrow, True)


def test_random_is_rewritten_on_a_second_pass_which_links_nothing():
    # the module's one exception to idempotence, documented: a random value cannot be
    # told from an original, so a second sweep draws another, as unlinkable as the first
    once = apply("random", "Jeanne", ctx(NAME))
    assert apply("random", once, ctx(NAME)) != once


def test_linkable_and_unlinkable_strategies_cover_every_strategy():
    assert {"keyed_hash", "pseudonym"} == LINKABLE
    assert set(STRATEGIES) == UNLINKABLE | LINKABLE
    assert {"constant", "random", "random_email", "null", "redact", "year"} <= UNLINKABLE


@pytest.mark.parametrize(
    ("strategy", "constant", "refused"),
    [
        ("constant", "Anonymous", False),
        ("random", None, False),
        ("null", None, False),
        ("constant", "Anonyme 1", True),
        ("redact", None, False),  # "[redacted]": brackets pass isCustomerName
        ("pseudonym", None, True),  # "anon-93a5...": digits
        ("keyed_hash", None, True),  # "h:...": a colon and digits
        ("department", None, True),
    ],
)
def test_a_strategy_whose_output_breaks_the_columns_pattern_is_refused(strategy, constant, refused):
    why = pattern_problem(strategy, NAME, CUSTOMER_NAME, constant)
    assert (why is not None) == refused, why
    if refused:
        assert "must match" in why and "(the shop's own rule)" in why


def test_each_purpose_has_its_own_key_so_no_hash_joins_another():
    keys = {purpose_key(SECRET, p) for p in ("audit", "suppression", "pseudonyms")}
    assert len(keys) == 3 and SECRET not in keys
    # an address's suppression hash is not its keyed_hash in the shop, nor its audit ref
    address = "jeanne@example.org"
    shop = apply("keyed_hash", address, ctx(ColumnFacts("email", "text", 254)))
    assert shop.removeprefix("h:") != value_hash(SECRET, address).split(":")[-1]
    assert value_hash(SECRET, address).startswith("hmac-sha256-v2:")
    assert subject_ref(SECRET, "customer:42").startswith("s2-")


def test_the_legacy_hashes_are_the_previous_releases_and_still_looked_up():
    # the previous release (git show 4a5e800:worker/domain/hashing.py) hashed with the
    # secret itself
    old_ref = "s-" + hmac.digest(SECRET, b"customer:42", "sha256").hex()[:32]
    old_hash = "hmac-sha256:" + hmac.new(SECRET, b"jeanne@example.org", hashlib.sha256).hexdigest()
    assert legacy_subject_ref(SECRET, "customer:42") == old_ref
    assert legacy_value_hash(SECRET, " Jeanne@Example.org ") == old_hash
    assert subject_refs(SECRET, "customer:42") == (subject_ref(SECRET, "customer:42"), old_ref)
    assert value_hashes(SECRET, "jeanne@example.org")[1] == old_hash
