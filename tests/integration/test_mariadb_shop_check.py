"""`lethe shop check` on a MariaDB shop reads its real constraints: UNIQUE over several
columns and on a prefix, column-level CHECKs (which SQLAlchemy's reflection misses),
lengths in characters, NOT NULL, ENUMs, and triggers (warned about); and a row a
constraint refuses during a sweep fails that person alone, its audit naming the
constraint and quoting nothing."""

from __future__ import annotations

import json

from harness import Lethe
from php_shop import NOW, build_php_shop, register_with, write_register

EXTRA_TABLES = [
    """CREATE TABLE `ps_wishlist` (
      `id_wishlist` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      `id_customer` INT(10) UNSIGNED NOT NULL,
      `name` VARCHAR(64) NOT NULL DEFAULT '',
      `token` VARCHAR(64) NOT NULL DEFAULT '',
      UNIQUE KEY `customer_name` (`id_customer`, `name`),
      UNIQUE KEY `token` (`token`(12))
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE `ps_contact` (
      `id_customer` INT(10) UNSIGNED NOT NULL PRIMARY KEY,
      `email` VARCHAR(255) NOT NULL DEFAULT '' CHECK (`email` LIKE '%@%')
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    """CREATE TABLE `ps_profile` (
      `id_customer` INT(10) UNSIGNED NOT NULL PRIMARY KEY,
      `phone` VARCHAR(16) NOT NULL DEFAULT '',
      `firstname` VARCHAR(64) NOT NULL DEFAULT '',
      `title` ENUM('mr', 'mrs', 'mx') NOT NULL DEFAULT 'mx'
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    "INSERT INTO ps_wishlist (id_customer, name, token) VALUES "
    "(1, 'Noël', 'tok-0001-aaaa'), (1, 'Anniversaire', 'tok-0002-bbbb')",
    "INSERT INTO ps_contact VALUES (1, 'client.1@example.org')",
    "INSERT INTO ps_profile VALUES (1, '0612345601', 'Jeanne', 'mrs')",
    # a copy of every change, old values included: Lethe cannot see into it
    """CREATE TABLE `ps_customer_history` (
      `id` INT AUTO_INCREMENT PRIMARY KEY, `id_customer` INT UNSIGNED, `email` VARCHAR(255)
    )""",
    """CREATE TRIGGER `ps_customer_history_copy` AFTER UPDATE ON `ps_customer`
      FOR EACH ROW INSERT INTO ps_customer_history (id_customer, email)
      VALUES (OLD.id_customer, OLD.email)""",
]


def _target(table: str, columns: str) -> str:
    return (
        f"          - table: {table}\n"
        "            key: id_customer\n"
        f"            columns: {{{columns}}}\n"
    )


def test_the_shop_check_reads_mariadbs_own_constraints(embedded: Lethe, mariadb_url: str, tmp_path):
    shop = build_php_shop(mariadb_url, customers=4, subscribers=2)
    shop.execute(*EXTRA_TABLES)
    embedded.env["LETHE_SHOP_DATABASE_URL"] = mariadb_url
    path = write_register(
        tmp_path,
        embedded,
        register_with(
            _target("ps_wishlist", "name: redact, token: keyed_hash")
            + _target("ps_contact", "email: keyed_hash")
            + _target("ps_profile", "phone: keyed_hash, title: redact, firstname: null")
        ),
    )
    result = embedded.run("shop", "check", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    said = result.stderr
    for problem in [
        # UNIQUE (id_customer, name): two lists of one person redacted would be one
        "target 'ps_wishlist': column 'name' is UNIQUE and redact gives many rows the same",
        "column 'token' is UNIQUE on its first 12 characters only, and keyed_hash needs 18",
        # a column-level CHECK, read from information_schema.CHECK_CONSTRAINTS
        "the shop's CHECK constraint email (`email` like '%@%') refuses email",
        # VARCHAR(16) in utf8mb4 holds 16 characters (64 bytes)
        "column 'phone' holds 16 characters, keyed_hash writes 18",
        "column 'title' is of type other and redact needs a text column",
        "column 'firstname' is NOT NULL",
    ]:
        assert problem in said, f"{problem!r} not in:\n{said}"
    assert str(path) in said

    # what fits: the trigger is named, not refused
    write_register(
        tmp_path,
        embedded,
        register_with(
            _target("ps_wishlist", "token: pseudonym") + _target("ps_contact", "email: null")
        ),
    )
    result = embedded.run("shop", "check", check=False)
    assert result.returncode == 1, "ps_contact.email is NOT NULL: null cannot fit"
    write_register(
        tmp_path,
        embedded,
        register_with(
            _target("ps_profile", "phone: redact, firstname: pseudonym")
            + _target("ps_wishlist", "name: keyed_hash")
        ),
    )
    result = embedded.run("shop", "check")
    assert "ps_customer_history_copy" in result.stdout + result.stderr
    assert "6 targets over 6 tables fit" in result.stdout + result.stderr


def test_a_row_a_check_refuses_fails_that_customer_alone_and_quotes_nothing(
    embedded: Lethe, mariadb_url: str, tmp_path
):
    # Newsletter 2 is a shop's own flag meaning "send to the address as it is": its CHECK
    # allows only a real address there. The shop check tries the newest rows, which pass;
    # customer 1, the oldest, is the one row it refuses.
    shop = build_php_shop(mariadb_url, customers=24, subscribers=2)
    shop.execute(
        "UPDATE ps_customer SET newsletter = 2 WHERE id_customer = 1",
        "ALTER TABLE ps_customer ADD CONSTRAINT `plain_mail` "
        "CHECK (`newsletter` <> 2 OR `email` LIKE '%@%')",
    )
    embedded.env["LETHE_SHOP_DATABASE_URL"] = mariadb_url
    write_register(tmp_path, embedded)
    embedded.start_worker()
    events = str(shop.events_file(tmp_path))
    embedded.python(
        "import json\n"
        "from worker.client import emit_many\n"
        f"sent = emit_many([json.loads(line) for line in open({events!r})])\n"
        "assert not sent.refused, sent.refused\n"
    )
    embedded.wait_stored(len(shop.events))
    embedded.run("shop", "check")
    ran = embedded.run("purge", "--now", NOW, "--format", "json", check=False)
    assert ran.returncode == 4, ran.stderr
    first = json.loads(ran.stdout)
    ran = embedded.run("purge", "--approve", str(first["run"]), "--format", "json", check=False)
    assert ran.stdout, ran.stderr
    done = json.loads(ran.stdout)
    assert done["failed"] == 1 and done["erased"] > 1, done
    customer = shop.read("ps_customer")[1]
    assert customer["email"] == "client.1@example.org", "the refused row was half written"
    assert shop.read("ps_customer")[2]["email"].startswith("h:")
    audit = json.loads(embedded.run("audit", "--format", "json").stdout)
    failed = [r for r in audit if r["outcome"] == "failed"]
    assert len({r["subject_ref"] for r in failed}) == 1
    assert "IntegrityError: CHECK constraint plain_mail" in json.dumps(failed)
    assert "example.org" not in json.dumps(audit)


VISITS = """\
  - id: shop.visits
    name: Visit statistics
    role: controller
    controller: Boutique PHP
    subjects: [visitor]
    data: [Browsing]
    purposes:
      - purpose: Audience statistics
        legal_basis: consent
    retention:
      - clock: [visit.recorded]
        keep: 13 months
        then: delete
        source: CNIL, cookies and trackers
        targets:
          - table: ps_connections_guest
            key: visitor
            key_value: subject
            delete_rows: true
"""


def test_a_subject_in_a_text_key_is_matched_byte_for_byte_not_by_the_collation(
    embedded: Lethe, mariadb_url: str, tmp_path
):
    # utf8mb4_general_ci finds 'visitor:AB' and 'visitor:ab ' for 'visitor:ab': three
    # people to Lethe, one row each, and only one of them is due
    shop = build_php_shop(mariadb_url, customers=1, subscribers=1)
    shop.execute(
        "CREATE TABLE `ps_connections_guest` (`id` INT AUTO_INCREMENT PRIMARY KEY, "
        "`visitor` VARCHAR(64) NOT NULL DEFAULT '', KEY (`visitor`)) "
        "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci",
        "INSERT INTO ps_connections_guest (visitor) VALUES "
        "('visitor:ab'), ('visitor:AB'), ('visitor:ab ')",
    )
    embedded.env["LETHE_SHOP_DATABASE_URL"] = mariadb_url
    text = register_with("").replace(
        "subject_kinds: [customer, subscriber]", "subject_kinds: [customer, subscriber, visitor]"
    )
    text = text.replace("events:\n", "events:\n  visit.recorded: a visit to the shop\n")
    write_register(tmp_path, embedded, text + VISITS)
    embedded.start_worker()
    visits = [
        ("visitor:ab", "2024-01-10T10:00:00+01:00"),
        ("visitor:AB", "2026-11-20T10:00:00+01:00"),
        ("visitor:ab ", "2026-11-20T10:00:00+01:00"),
    ]
    code = "from worker.client import emit\n" + "".join(
        f"emit('visit.recorded', subject={s!r}, occurred_at={at!r}, id='visit-{n}')\n"
        for n, (s, at) in enumerate(visits)
    )
    embedded.python(code)
    embedded.wait_stored(3)
    ran = embedded.run("purge", "--now", NOW, "--format", "json", check=False)
    first = json.loads(ran.stdout)
    ran = embedded.run("purge", "--approve", str(first["run"]), "--format", "json", check=False)
    assert json.loads(ran.stdout)["erased"] >= 1, ran.stderr
    left = sorted(r["visitor"] for r in shop.read("ps_connections_guest").values())
    assert left == ["visitor:AB", "visitor:ab "]


def test_a_zero_date_is_written_back_as_it_was_under_a_strict_no_zero_date_mode(
    mariadb_url: str, tmp_path
):
    # A shop whose server runs STRICT_ALL_TABLES,NO_ZERO_DATE still holds the zero dates
    # written before: the sweep writes a row's target columns back whole, zero date
    # included. The shared test server's global mode is not ours to change, so the
    # session starts in the shop's mode, then runs what Lethe's connections run.
    import sqlalchemy as sa

    from worker.domain.register_file import load_register
    from worker.shop.apply import apply_targets
    from worker.shop.binding import bind_targets, dispose_engines, shop_engine
    from worker.shop.mysql import SESSION_SETUP

    build_php_shop(mariadb_url, customers=1, subscribers=1)
    path = tmp_path / "register.yaml"
    path.write_text(register_with(""))
    engine = shop_engine(mariadb_url)
    try:
        bound = bind_targets(load_register(path), path, engine, b"s" * 32)["shop.customers"]
        orders = [b for b in bound if b.table.name == "ps_orders"]
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE'"
            )
            connection.exec_driver_sql(SESSION_SETUP)
            applied = apply_targets(connection, [("customer:1", orders[0])], b"s" * 32)
        assert applied.rows[("customer:1", "shop.customers", "ps_orders")] == 2
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT gift_message, invoice_date FROM ps_orders ORDER BY id_order")
            ).all()
        assert [r.gift_message for r in rows] == [None, None]
        assert rows[1].invoice_date == "0000-00-00 00:00:00"
        assert rows[0].invoice_date.month == 1 and rows[0].invoice_date.day == 1
    finally:
        dispose_engines()


ODD_NAMES = """\
  - id: shop.odd
    name: Names that need backticks
    role: controller
    controller: Boutique PHP
    subjects: [visitor]
    data: [Identity]
    purposes:
      - purpose: Test
        legal_basis: consent
    retention:
      - clock: [visit.recorded]
        keep: 13 months
        then: pseudonymise
        source: test
        targets:
          - table: "ps_order detail"
            key: "visitor ref"
            key_value: subject
            columns: {"e-mail": keyed_hash, "order": redact, "50%": "null"}
"""


def test_tables_and_columns_whose_names_need_backticks_are_swept(mariadb_url: str, tmp_path):
    import sqlalchemy as sa

    from worker.domain.register_file import load_register
    from worker.shop.apply import apply_targets
    from worker.shop.binding import bind_targets, dispose_engines, shop_engine

    shop = build_php_shop(mariadb_url, customers=1, subscribers=1)
    shop.execute(
        "CREATE TABLE `ps_order detail` (`id` INT PRIMARY KEY, `visitor ref` VARCHAR(64), "
        "`e-mail` VARCHAR(255), `order` VARCHAR(64), `50%` VARCHAR(10))",
        "INSERT INTO `ps_order detail` VALUES (1, 'visitor:v1', 'a@example.org', 'x', 'y'), "
        "(2, 'visitor:V1', 'b@example.org', 'x', 'y')",
    )
    text = register_with("").replace(
        "subject_kinds: [customer, subscriber]", "subject_kinds: [customer, subscriber, visitor]"
    )
    text = text.replace("events:\n", "events:\n  visit.recorded: a visit to the shop\n")
    path = tmp_path / "register.yaml"
    path.write_text(text + ODD_NAMES)
    engine = shop_engine(mariadb_url)
    try:
        [odd] = bind_targets(load_register(path), path, engine, b"s" * 32)["shop.odd"]
        with engine.begin() as connection:
            apply_targets(connection, [("visitor:v1", odd)], b"s" * 32)
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM `ps_order detail` ORDER BY id")).all()
    finally:
        dispose_engines()
    assert rows[0][2].startswith("h:") and rows[0][3:] == ("[redacted]", None)
    assert rows[1][2:] == ("b@example.org", "x", "y"), "visitor:V1 is someone else"
