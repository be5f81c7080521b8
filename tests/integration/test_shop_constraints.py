"""The shop's own constraints beyond plain UNIQUE: a unique index on an expression and a
CHECK constraint refuse what some strategies write, and `lethe shop check` says so before
a sweep fails those people every night."""

from __future__ import annotations

import sqlalchemy as sa
from harness import Lethe, copy_register
from sweeping import (
    NOW,
    make_shop,
    seed_store,
    shop_postgres_url,  # noqa: F401 (fixture)
)

TARGET = """\
          - table: contacts
            key: customer_id
            columns: {{email: {email}, nickname: {nickname}}}
"""


def test_a_check_constraint_and_an_expression_index_are_checked_before_any_sweep(
    lethe: Lethe, request, tmp_path
):
    shop = make_shop(lethe, request, people=40)
    customers = [c["id"] for c in shop.data.rows["customers"]]
    engine = shop.engine()
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE contacts (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
                "email VARCHAR(120) CONSTRAINT email_has_at CHECK (email LIKE '%@%'), "
                "nickname VARCHAR(40))"
            )
        )
        connection.execute(
            sa.text("CREATE UNIQUE INDEX contacts_nickname_ci ON contacts (lower(nickname))")
        )
        connection.execute(
            sa.text("INSERT INTO contacts VALUES (:c, :c, :e, :n)"),
            [{"c": c, "e": f"contact{c}@example.org", "n": f"Nick{c}"} for c in customers],
        )
    register = copy_register(tmp_path)
    text = register.read_text()
    end_of_customers = "              city: null\n"  # crm.customers' first target
    lethe.env["LETHE_REGISTER"] = str(register)

    def contacts_target(email: str, nickname: str) -> str:
        targets = TARGET.format(email=email, nickname=nickname)
        register.write_text(text.replace(end_of_customers, end_of_customers + targets, 1))
        line = register.read_text().splitlines().index(targets.splitlines()[-1]) + 1
        return f"{register}:{line}: activity 'crm.customers', target 'contacts': "

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
