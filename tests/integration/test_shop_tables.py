"""The shop's own tables, taken as their schema says: `lethe shop check` tells what a
strategy's output would break before a sweep fails those people every night, and a
sweep writes what each column's type means."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import Lethe, copy_register
from sweeping import (
    NOW,
    Shop,
    make_shop,
    seed_store,
    shop_postgres_url,  # noqa: F401 (fixture)
)

END_OF_CUSTOMERS = "              city: null\n"  # crm.customers' first target


class OwnTargets:
    """The register, with targets on the test's own tables added to crm.customers."""

    def __init__(self, lethe: Lethe, tmp_path: Path):
        self.path = copy_register(tmp_path)
        self.text = self.path.read_text()
        lethe.env["LETHE_REGISTER"] = str(self.path)

    def write(self, targets: str, table: str) -> str:
        """Writes them; returns how a problem on their last line begins."""
        self.path.write_text(self.text.replace(END_OF_CUSTOMERS, END_OF_CUSTOMERS + targets, 1))
        line = self.path.read_text().splitlines().index(targets.splitlines()[-1]) + 1
        return f"{self.path}:{line}: activity 'crm.customers', target '{table}': "


def _shop_with(
    lethe: Lethe,
    request: pytest.FixtureRequest,
    tables: list[str],
    rows: Callable[[list[int]], dict[str, list[dict]]],
) -> Shop:
    """The demo shop with tables of the test's own, filled by `rows(customer ids)`."""
    shop = make_shop(lethe, request, people=40)
    customers = [c["id"] for c in shop.data.rows["customers"]]
    engine = shop.engine()
    with engine.begin() as connection:
        for statement in tables:
            connection.execute(sa.text(statement))
        for insert, values in rows(customers).items():
            connection.execute(sa.text(insert), values)
    engine.dispose()
    return shop


def test_a_unique_label_and_a_real_column_are_checked_by_their_real_constraints(
    embedded: Lethe, request, tmp_path
):
    # A person's addresses are unique per label (two labels redacted would be one), and
    # loyalty points are a REAL: the shop check says what cannot work, the sweep does the rest.
    shop = _shop_with(
        embedded,
        request,
        [
            "CREATE TABLE addresses (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
            "label VARCHAR(40) NOT NULL, UNIQUE (customer_id, label))",
            "CREATE TABLE loyalty (customer_id INTEGER PRIMARY KEY, points REAL)",
        ],
        lambda customers: {
            "INSERT INTO addresses (customer_id, label) VALUES (:c, :label)": [
                {"c": c, "label": label} for c in customers for label in ("home", "work")
            ],
            "INSERT INTO loyalty VALUES (:c, 1234.5)": [{"c": c} for c in customers],
        },
    )
    register = OwnTargets(embedded, tmp_path)

    def label(strategy: str) -> str:
        return register.write(
            "          - table: loyalty\n"
            "            key: customer_id\n"
            "            columns: {points: amount_range}\n"
            "          - table: addresses\n"
            "            key: customer_id\n"
            f"            columns: {{label: {strategy}}}\n",
            "addresses",
        )

    for strategy, why in [("redact", "is UNIQUE"), ("pseudonym", "several rows")]:
        where = label(strategy)
        result = embedded.run("shop", "check", check=False)
        assert result.returncode == 1
        assert where in result.stderr
        assert why in result.stderr and "points" not in result.stderr

    label("keyed_hash")
    embedded.run("shop", "check")
    seed_store(embedded, shop.data.events)
    due = {int(s.split(":")[1]) for s, a in shop.due() if a == "crm.customers"}
    swept = shop.purge_approved(NOW)
    assert swept["failed"] == 0 and due
    engine = shop.engine()
    with engine.connect() as connection:
        labels = connection.execute(sa.text("SELECT customer_id, label FROM addresses")).all()
        points = dict(connection.execute(sa.text("SELECT customer_id, points FROM loyalty")).all())
    engine.dispose()
    assert {c: p for c, p in points.items() if c in due} == {c: 1000.0 for c in due}
    hashed = [label for c, label in labels if c in due]
    assert len(hashed) == 2 * len(due) and all(label.startswith("h:") for label in hashed)


def test_a_check_constraint_and_an_expression_index_are_checked_before_any_sweep(
    lethe: Lethe, request, tmp_path
):
    shop = _shop_with(
        lethe,
        request,
        [
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
            "email VARCHAR(120) CONSTRAINT email_has_at CHECK (email LIKE '%@%'), "
            "nickname VARCHAR(40))",
            "CREATE UNIQUE INDEX contacts_nickname_ci ON contacts (lower(nickname))",
        ],
        lambda customers: {
            "INSERT INTO contacts VALUES (:c, :c, :e, :n)": [
                {"c": c, "e": f"contact{c}@example.org", "n": f"Nick{c}"} for c in customers
            ]
        },
    )
    engine = shop.engine()
    register = OwnTargets(lethe, tmp_path)

    def contacts_target(email: str, nickname: str) -> str:
        return register.write(
            "          - table: contacts\n"
            "            key: customer_id\n"
            f"            columns: {{email: {email}, nickname: {nickname}}}\n",
            "contacts",
        )

    def contacts() -> list[tuple]:
        with engine.connect() as connection:
            query = "SELECT customer_id, email, nickname FROM contacts ORDER BY id"
            return [tuple(r) for r in connection.execute(sa.text(query))]

    before = contacts()
    # two people's nicknames redacted would be one in lower(nickname)
    where = contacts_target(email="null", nickname="redact")
    refused = lethe.run("shop", "check", check=False)
    assert refused.returncode == 1
    assert f"{where}column 'nickname' is UNIQUE" in refused.stderr

    # 'h:...' has no @: the constraint would roll back every one of these people's erasures
    where = contacts_target(email="keyed_hash", nickname="keyed_hash")
    refused = lethe.run("shop", "check", check=False)
    assert refused.returncode == 1
    assert f"{where}the shop's CHECK constraint email_has_at (" in refused.stderr
    assert "refuses email as the strategies leave it" in refused.stderr
    assert "example.org" not in refused.stderr and "Nick" not in refused.stderr
    assert contacts() == before, "the check tried the strategies without writing"

    contacts_target(email="null", nickname="keyed_hash")
    lethe.run("shop", "check")
    seed_store(lethe, shop.data.events)
    due = {int(s.split(":")[1]) for s, a in shop.due() if a == "crm.customers"}
    swept = shop.purge_approved(NOW)
    assert swept["status"] == "done" and swept["failed"] == 0 and due
    after = {c: (e, n) for c, e, n in contacts()}
    assert all(after[c][0] is None and after[c][1].startswith("h:") for c in due)
    kept = {c: (e, n) for c, e, n in before if c not in due}
    assert kept and all(after[c] == kept[c] for c in kept)
    engine.dispose()


def test_a_moment_with_a_time_zone_keeps_the_year_it_had_in_the_registers_zone(
    distributed: Lethe, request, tmp_path
):
    # PostgreSQL reads a timestamptz in the session's zone (UTC here): 1 January 2021 at
    # 00:30 in Paris is 31 December 2020 there, and its year must stay 2021.
    shop = _shop_with(
        distributed,
        request,
        ["CREATE TABLE logins (customer_id INTEGER PRIMARY KEY, at TIMESTAMPTZ NOT NULL)"],
        lambda customers: {
            "INSERT INTO logins VALUES (:c, :at)": [
                {"c": c, "at": "2021-01-01T00:30:00+01:00"} for c in customers
            ]
        },
    )
    OwnTargets(distributed, tmp_path).write(
        "          - table: logins\n"
        "            key: customer_id\n"
        "            columns: {at: year}\n",
        "logins",
    )
    seed_store(distributed, shop.data.events)
    due = {int(s.split(":")[1]) for s, a in shop.due() if a == "crm.customers"}
    swept = shop.purge_approved(NOW)
    assert swept["status"] == "done" and swept["failed"] == 0 and due
    engine = shop.engine()
    with engine.connect() as connection:
        connection.execute(sa.text("SET TIME ZONE 'Europe/Paris'"))
        query = "SELECT customer_id, to_char(at, 'YYYY-MM-DD HH24:MI') FROM logins"
        logins = dict(connection.execute(sa.text(query)).all())
    engine.dispose()
    assert {logins[c] for c in due} == {"2021-01-01 00:00"}
    assert {v for c, v in logins.items() if c not in due} == {"2021-01-01 00:30"}


def test_a_value_its_column_cannot_read_fails_that_person_alone_and_quotes_nothing(
    embedded: Lethe, request, tmp_path
):
    # SQLite keeps any text in a DATE column: the check cannot read it, the sweep cannot
    # take its year; neither may print it, and the other people are erased all the same.
    odd = "le 3 mars 1985"
    shop = _shop_with(
        embedded,
        request,
        [
            "CREATE TABLE profiles (customer_id INTEGER PRIMARY KEY, "
            "born DATE CONSTRAINT born_after_1900 CHECK (born > '1900-01-01'))"
        ],
        lambda customers: {
            "INSERT INTO profiles VALUES (:c, :born)": [
                {"c": c, "born": odd if c == customers[-1] else "1985-03-03"} for c in customers
            ]
        },
    )
    OwnTargets(embedded, tmp_path).write(
        "          - table: profiles\n"
        "            key: customer_id\n"
        "            columns: {born: year}\n",
        "profiles",
    )
    checked = embedded.run("shop", "check")
    assert odd not in checked.stdout + checked.stderr
    seed_store(embedded, shop.data.events)
    due = {int(s.split(":")[1]) for s, a in shop.due() if a == "crm.customers"}
    odd_one = max(c["id"] for c in shop.data.rows["customers"])
    assert odd_one in due, "the test needs the odd row among the due"
    swept = shop.purge_approved(NOW)
    assert swept["status"] == "done" and swept["erased"] > 0 and swept["failed"] > 0
    engine = shop.engine()
    with engine.connect() as connection:
        born = dict(connection.execute(sa.text("SELECT customer_id, born FROM profiles")).all())
    engine.dispose()
    assert born[odd_one] == odd
    assert {born[c] for c in due if c != odd_one} == {"1985-01-01"}
    failed = [r for r in shop.audit() if r["outcome"] == "failed"]
    assert failed and all(r["strategy"].endswith("(failed: ValueError)") for r in failed)
    assert odd not in json.dumps(shop.audit())
