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
)

END_OF_CUSTOMERS = "              city: null\n"  # crm.customers' first target
# crm.customers' end action: these tests try the linkable strategies (keyed_hash,
# pseudonym) too, which only `then: pseudonymise` allows
CUSTOMERS_THEN = "        then: anonymise\n        # Lethe: after an erasure request"


class OwnTargets:
    """The register, with targets on the test's own tables added to crm.customers, whose
    rule says then: pseudonymise."""

    def __init__(self, lethe: Lethe, tmp_path: Path):
        self.path = copy_register(tmp_path)
        text = self.path.read_text()
        assert CUSTOMERS_THEN in text
        self.text = text.replace(
            CUSTOMERS_THEN, CUSTOMERS_THEN.replace("anonymise", "pseudonymise")
        )
        lethe.env["LETHE_REGISTER"] = str(self.path)

    def write(self, targets: str, table: str) -> str:
        """Writes them; returns how a problem on their last line begins."""
        self.path.write_text(self.text.replace(END_OF_CUSTOMERS, END_OF_CUSTOMERS + targets, 1))
        line = self.path.read_text().splitlines().index(targets.splitlines()[-1]) + 1
        return f"{self.path}:{line}: activity 'crm.customers', target '{table}': "


def customer_target(table: str, columns: str) -> str:
    """A target on a table of the test's own keyed by customer id, as the register's lines
    under crm.customers write it (`columns`: the inside of its flow mapping)."""
    return (
        f"          - table: {table}\n"
        "            key: customer_id\n"
        f"            columns: {{{columns}}}\n"
    )


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


def refusal(lethe: Lethe) -> str:
    """What `lethe shop check` says when it refuses the register (exit 1)."""
    result = lethe.run("shop", "check", check=False)
    assert result.returncode == 1, result.stderr
    return result.stderr


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
            customer_target("loyalty", "points: amount_range")
            + customer_target("addresses", f"label: {strategy}"),
            "addresses",
        )

    for strategy, why in [("redact", "is UNIQUE"), ("pseudonym", "several rows")]:
        where = label(strategy)
        refused = refusal(embedded)
        assert where in refused
        assert why in refused and "points" not in refused

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
            customer_target("contacts", f"email: {email}, nickname: {nickname}"),
            "contacts",
        )

    def contacts() -> list[tuple]:
        with engine.connect() as connection:
            query = "SELECT customer_id, email, nickname FROM contacts ORDER BY id"
            return [tuple(r) for r in connection.execute(sa.text(query))]

    before = contacts()
    # two people's nicknames redacted would be one in lower(nickname)
    where = contacts_target(email="null", nickname="redact")
    refused = refusal(lethe)
    assert f"{where}column 'nickname' is UNIQUE" in refused

    # 'h:...' has no @: the constraint would roll back every one of these people's erasures
    where = contacts_target(email="keyed_hash", nickname="keyed_hash")
    refused = refusal(lethe)
    assert f"{where}the shop's CHECK constraint email_has_at (" in refused
    assert "refuses email as the strategies leave it" in refused
    assert "example.org" not in refused and "Nick" not in refused
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


def test_a_check_constraint_is_tried_on_a_sample_row_while_the_table_is_empty(
    lethe: Lethe, request, tmp_path
):
    # A shop that sets Lethe up with a new table has no rows to try a CHECK on; left
    # untried, every erasure of its first customers would be refused by it, night after night.
    _shop_with(
        lethe,
        request,
        [
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
            "email VARCHAR(120) CONSTRAINT email_has_at CHECK (email LIKE '%@%'), "
            "postcode VARCHAR(5) CONSTRAINT postcode_or_area "
            "CHECK (length(postcode) IN (2, 5)), "
            "opted_in_at DATE, CONSTRAINT opted_in_has_email "
            "CHECK (opted_in_at IS NULL OR email IS NOT NULL))",
        ],
        lambda customers: {},
    )
    register = OwnTargets(lethe, tmp_path)

    def contacts_target(email: str) -> str:
        return register.write(
            customer_target("contacts", f"email: {email}, postcode: department"),
            "contacts",
        )

    where = contacts_target("keyed_hash")
    refused = refusal(lethe)
    assert f"{where}the shop's CHECK constraint email_has_at (" in refused
    assert "sample row" in refused
    # the department (2 characters) meets postcode_or_area; opted_in_has_email names a
    # column the strategies leave alone, NULL in the sample, so it cannot refuse it
    assert "postcode_or_area" not in refused
    assert "opted_in_has_email" not in refused

    contacts_target("null")
    lethe.run("shop", "check")


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
        customer_target("logins", "at: year"),
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
        customer_target("profiles", "born: year"),
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


# PostgreSQL domains, as a shop declares them: reflection keeps their kind, not their
# length, nor a NOT NULL on the domain underneath, nor (but the first) their CHECKs.
SHOP_DOMAINS = [
    "CREATE DOMAIN postcode_fr AS varchar(5) NOT NULL "
    "CONSTRAINT postcode_fr_digits CHECK (VALUE ~ '^[0-9]{5}$')",
    "CREATE DOMAIN area AS varchar(5) NOT NULL "
    "CONSTRAINT area_digits CHECK (VALUE ~ '^([0-9]{2,5}|2[AB])$')",
    "CREATE DOMAIN home_area AS area",  # NOT NULL, and area_digits, from area
    "CREATE DOMAIN mail AS varchar(40) CONSTRAINT mail_or_hash "
    "CHECK (VALUE LIKE '%@%' OR VALUE LIKE 'h:%')",
    "CREATE DOMAIN remark AS text",  # NULL allowed
    "CREATE DOMAIN band AS varchar(12)",
    "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
    "postcode postcode_fr, area home_area, email mail, remark remark)",
    "CREATE TABLE baskets (customer_id INTEGER PRIMARY KEY, spent band, email mail)",
]


def _domain_rows(customers: list[int]) -> dict[str, list[dict]]:
    codes = ["75008", "20090", "97110"]
    return {
        "INSERT INTO deliveries VALUES (:c, :c, :p, :a, :e, 'ring twice')": [
            {"c": c, "p": codes[c % 3], "a": codes[c % 3], "e": f"client{c}@example.org"}
            for c in customers
        ],
        "INSERT INTO baskets VALUES (:c, '1234.50', :e)": [
            {"c": c, "e": f"client{c}@example.org"} for c in customers
        ],
    }


def test_a_domain_column_is_checked_by_its_domains_length_not_null_and_checks(
    distributed: Lethe, request, tmp_path
):
    _shop_with(distributed, request, SHOP_DOMAINS, _domain_rows)
    register = OwnTargets(distributed, tmp_path)

    def deliveries(columns: str) -> str:
        return register.write(
            customer_target("deliveries", columns),
            "deliveries",
        )

    refusals = [
        # "75" is no postcode: every one of these people's erasures would be rolled back
        (
            "postcode: department",
            "the shop's CHECK constraint postcode_fr_digits ((postcode)::text ~ "
            "'^[0-9]{5}$'::text) on domain postcode_fr refuses postcode as the strategies "
            "leave it",
        ),
        ("postcode: redact", "column 'postcode' holds 5 characters, redact writes 10"),
        ("area: null", "column 'area' is NOT NULL"),  # from area, under home_area
        ("email: redact", "the shop's CHECK constraint mail_or_hash ("),
    ]
    for columns, why in refusals:
        where = deliveries(columns)
        refused = refusal(distributed)
        assert f"{where}{why}" in refused, refused
        assert "is of type other" not in refused
        assert "example.org" not in refused

    deliveries("area: department, email: keyed_hash, remark: null")
    distributed.run("shop", "check")


def test_a_sweep_anonymises_domain_columns_in_sql_and_in_python(
    distributed: Lethe, request, tmp_path
):
    # deliveries' strategies all have an SQL form (one UPDATE computes them); a text
    # amount_range has none, so baskets go through Python and an UPDATE ... unnest()
    shop = _shop_with(distributed, request, SHOP_DOMAINS, _domain_rows)
    OwnTargets(distributed, tmp_path).write(
        customer_target("deliveries", "area: department, email: keyed_hash, remark: null")
        + customer_target("baskets", "spent: amount_range, email: keyed_hash"),
        "baskets",
    )
    engine = shop.engine()

    def read(query: str) -> dict[int, tuple]:
        with engine.connect() as connection:
            return {r[0]: tuple(r[1:]) for r in connection.execute(sa.text(query))}

    deliveries_query = "SELECT customer_id, postcode, area, email, remark FROM deliveries"
    before = read(deliveries_query)
    seed_store(distributed, shop.data.events)
    due = {int(s.split(":")[1]) for s, a in shop.due() if a == "crm.customers"}
    swept = shop.purge_approved(NOW)
    assert swept["status"] == "done" and swept["failed"] == 0 and due
    after = read(deliveries_query)
    baskets = read("SELECT customer_id, spent, email FROM baskets")
    engine.dispose()
    departments = {"75008": "75", "20090": "2A", "97110": "971"}
    for c in due:
        postcode, _, email, remark = after[c]
        # the hash cut to mail's 40 characters, which reflection does not know
        assert after[c] == (postcode, departments[postcode], email, None)
        assert postcode == before[c][0] and email.startswith("h:") and len(email) == 40
        assert baskets[c][0] == "1000-2500" and len(baskets[c][1]) == 40
        assert baskets[c][1].startswith("h:")
    assert all(after[c] == before[c] for c in after if c not in due)


# A trigger on each of the shop's tables that a sweep writes: the audit copy of an
# address (the data would stay in customers_history) is warned about, never refused.
SQLITE_TRIGGERS = [
    "CREATE TRIGGER customers_audit AFTER UPDATE ON customers BEGIN "
    "INSERT INTO customers_history VALUES (OLD.email, datetime('now')); END",
    "CREATE TRIGGER customers_welcome AFTER INSERT ON customers BEGIN SELECT 1; END",
    # only an UPDATE that writes one of its columns runs it: phone is nulled, created_at kept
    "CREATE TRIGGER customers_contact AFTER UPDATE OF created_at, phone ON customers BEGIN "
    "INSERT INTO customers_history VALUES (OLD.phone, datetime('now')); END",
    "CREATE TRIGGER customers_created AFTER UPDATE OF created_at ON customers BEGIN SELECT 1; END",
    'CREATE TRIGGER "unsubscribed log" BEFORE DELETE ON newsletter_subscribers BEGIN '
    "INSERT INTO customers_history VALUES (OLD.email, datetime('now')); END",
    # newsletter_subscribers' rows are deleted, never updated: this one does not fire
    "CREATE TRIGGER subscribers_touch UPDATE OF email ON newsletter_subscribers BEGIN "
    "SELECT 1; END",
]
POSTGRES_TRIGGERS = [
    "CREATE FUNCTION keep_old_email() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO customers_history VALUES (OLD.email, now()); RETURN OLD; END $$",
    "CREATE TRIGGER customers_audit AFTER UPDATE ON customers FOR EACH ROW "
    "EXECUTE FUNCTION keep_old_email()",
    "CREATE TRIGGER customers_welcome AFTER INSERT ON customers FOR EACH ROW "
    "EXECUTE FUNCTION keep_old_email()",
    "CREATE TRIGGER customers_contact AFTER UPDATE OF created_at, phone ON customers "
    "FOR EACH ROW EXECUTE FUNCTION keep_old_email()",
    "CREATE TRIGGER customers_created AFTER UPDATE OF created_at ON customers "
    "FOR EACH ROW EXECUTE FUNCTION keep_old_email()",
    'CREATE TRIGGER "unsubscribed log" BEFORE DELETE ON newsletter_subscribers FOR EACH ROW '
    "EXECUTE FUNCTION keep_old_email()",
    "CREATE TRIGGER subscribers_touch AFTER UPDATE OF email ON newsletter_subscribers "
    "FOR EACH ROW EXECUTE FUNCTION keep_old_email()",
    # a rule copies old values as a trigger does; one on INSERT is never run by a sweep
    "CREATE RULE keep_old AS ON UPDATE TO customers DO ALSO "
    "INSERT INTO customers_history VALUES (OLD.email, now())",
    "CREATE RULE welcome AS ON INSERT TO customers DO ALSO "
    "INSERT INTO customers_history VALUES (NEW.email, now())",
]


def test_triggers_a_sweep_fires_are_warned_about_by_the_check_and_the_sweep(
    lethe: Lethe, request, tmp_path
):
    history = "CREATE TABLE customers_history (email VARCHAR(254), changed_at TIMESTAMP)"
    triggers = SQLITE_TRIGGERS if lethe.embedded else POSTGRES_TRIGGERS
    shop = _shop_with(lethe, request, [history, *triggers], lambda customers: {})

    checked = lethe.run("shop", "check")  # exit 0: a warning, not a refusal
    warnings = [line for line in checked.stderr.splitlines() if line.startswith("warning:")]
    remedy = (
        "Lethe cannot see what a trigger does; if one copies old values elsewhere (an audit "
        "or history table), that table needs a target of its own"
    )
    fire = ["customers_audit", "customers_contact"] + ([] if lethe.embedded else ["rule keep_old"])
    assert warnings == [
        "warning: table 'customers' has triggers that run when a sweep updates its rows "
        f"({', '.join(fire)}): {remedy}",
        "warning: table 'newsletter_subscribers' has triggers that run when a sweep deletes "
        f"its rows (unsubscribed log): {remedy}",
    ]
    assert "fit the shop schema" in checked.stderr

    # a sweep logs the same once as it starts (a dry run starts as a sweep does)
    seed_store(lethe, shop.data.events)
    dry = shop.purge("--dry-run", "--now", NOW)
    assert dry["exit"] == 0
    records = [json.loads(line) for line in dry["stderr"].splitlines() if line.startswith("{")]
    fired = [
        (r["level"], r["table"], r["triggers"], r["writes"]) for r in records if "triggers" in r
    ]
    assert fired == [
        ("warning", "customers", fire, ["UPDATE"]),
        ("warning", "newsletter_subscribers", ["unsubscribed log"], ["DELETE"]),
    ]
    emails = [c["email"] for c in shop.data.rows["newsletter_subscribers"]]
    assert emails and not any(e in dry["stderr"] for e in emails), "names only, never values"


NAME_RULE = '^[^0-9!<>,;?=+()@#"°{}_$%:]*$'  # PrestaShop's Validate::isCustomerName


@pytest.mark.parametrize(
    ("written", "refused"),
    [
        ("{constant: Anonymous}", None),
        ("{strategy: random}", None),
        ("{strategy: department}", "'75'"),
        ("{strategy: random_email}", "@erased.invalid"),
    ],
)
def test_shop_check_refuses_a_strategy_whose_output_breaks_the_columns_own_rule(
    embedded: Lethe, request, tmp_path, written: str, refused: str | None
):
    make_shop(embedded, request, people=10)
    register = copy_register(tmp_path)
    text = register.read_text()
    shipped = "last_name: {constant: Anonymous, pattern: *customer_name}"
    assert shipped in text
    column = f"last_name: {written[:-1]}, pattern: '{NAME_RULE}'}}"
    register.write_text(text.replace(shipped, column, 1))
    embedded.env["LETHE_REGISTER"] = str(register)
    if refused is None:
        embedded.run("shop", "check")
        return
    line = register.read_text().splitlines().index(f"              {column}") + 1
    message = refusal(embedded)
    assert f"{register}:{line}: activity 'crm.customers', target 'customers': " in message
    assert "column 'last_name' must match" in message and refused in message
