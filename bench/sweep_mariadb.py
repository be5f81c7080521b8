"""Sweep benchmark on a MariaDB shop: Lethe's sweep against hand-written bulk UPDATEs and
DELETEs on MariaDB, plus the same bookkeeping in the store (bench/sweep.py's ceiling).

    .venv/bin/python bench/sweep_mariadb.py [--subjects 100000] [--batch 2000]

The shop is the demo shop's schema on MariaDB (LETHE_TEST_MARIADB_URL, default
mysql+pymysql://root@127.0.0.1:3306), filled with INSERT ... SELECT from MariaDB's
sequence tables (seq_1_to_N) with the same rows bench/sweep.py puts in PostgreSQL; the
store is PostgreSQL, as in a deployment. The sweep is the real one (open_run, stopped
for approval, approve, run_sweep); then the shop is refilled and the same rows are
anonymised or deleted by one hand-written statement per table, in one transaction; then
the store's bookkeeping (audit rows, lifecycles, event payloads) in bulk SQL too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sweep import (  # noqa: E402 (bench/ is no package)
    counts,
    database,
    fill_store,
    run_bookkeeping_sql,
    run_lethe_sweep,
)

MARIADB_URL = os.environ.get("LETHE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306")


@contextmanager
def mariadb_database() -> Iterator[str]:
    name = f"lethe_bench_shop_{uuid.uuid4().hex[:8]}"
    server = MARIADB_URL.rstrip("/")
    admin = sa.create_engine(server)
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield f"{server}/{name}"
    finally:
        from worker.shop.binding import dispose_engines

        dispose_engines()
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def _seq(n: int) -> str:
    # MariaDB's Sequence engine: a table of 1..n made on demand (none for n = 0)
    return f"seq_1_to_{n}" if n > 0 else "seq_1_to_1 WHERE FALSE"


def fill_shop(url: str, n: dict[str, int]) -> None:
    """The demo shop's tables on MariaDB, with bench/sweep.py's rows."""
    from worker.demo.shop import create_schema

    engine = sa.create_engine(url)
    create_schema(engine)
    c, v, nl, p, cand, amb, dist = (
        n["customer"],
        n["visitor"],
        n["newsletter"],
        n["prospect"],
        n["candidate"],
        n["ambassador"],
        n["distributor-customer"],
    )
    statements = [
        f"""INSERT INTO customers SELECT seq, CONCAT('jeanne.martin.', seq, '@example.org'),
            'Jeanne', 'Martin', '+33 6 12 34 56 78', DATE '1960-01-01' + INTERVAL (seq % 15000)
            DAY, CONCAT(seq, ' rue de la Paix'), CONCAT(LPAD((seq % 95) + 1, 2, '0'), '008'),
            'Paris', NOW() FROM {_seq(c)}""",
        f"""INSERT INTO accounts SELECT seq, CONCAT('jeanne.martin.', seq, '@example.org'),
            'argon2$abc', NOW(), '192.0.2.1' FROM {_seq(c)} WHERE seq % 10 < 7""",
        f"""INSERT INTO orders SELECT seq, seq, CONCAT('A-', seq), NOW(), 'Jeanne Martin',
            '1 avenue Foch', '75008', 'Paris', 42.50, NULL FROM {_seq(c)}""",
        f"""INSERT INTO invoices SELECT seq, CONCAT('F-', seq), seq, NULL, CURRENT_DATE,
            'Jeanne Martin', '1 bd Haussmann', '75008', 'Paris',
            CONCAT('jeanne.martin.', seq, '@example.org'), '+33 6 12 34 56 78', 35.42, 7.08,
            42.50 FROM {_seq(c)}""",
        f"""INSERT INTO invoices SELECT {c} + seq, CONCAT('F-A', seq), NULL, CONCAT('a-', seq),
            CURRENT_DATE, 'Louis Petit', '3 place Bellecour', '69003', 'Lyon',
            CONCAT('louis.', seq, '@example.org'), NULL, 100, 20, 120 FROM {_seq(amb)}""",
        f"""INSERT INTO navigation_logs SELECT seq, CONCAT('visitor:v-', seq), NOW(),
            '198.51.100.7', 'Mozilla/5.0', '/catalogue' FROM {_seq(v)}""",
        f"""INSERT INTO newsletter_subscribers SELECT seq, CONCAT('visitor:n-', seq),
            CONCAT('reader.', seq, '@example.com'), 'Léa', NOW() FROM {_seq(nl)}""",
        f"""INSERT INTO prospects SELECT seq, CONCAT('p-', seq), 'Hugo Durand',
            CONCAT('hugo.', seq, '@example.net'), '+33 6 00 00 00 00', 'Durand SARL', '13001',
            'Bonjour', NOW() FROM {_seq(p)}""",
        f"""INSERT INTO candidates SELECT seq, CONCAT('c-', seq), 'Manon', 'Leroy',
            CONCAT('manon.', seq, '@example.com'), NULL, 'Lille', 'CV', NOW() FROM {_seq(cand)}""",
        f"""INSERT INTO ambassadors SELECT seq, CONCAT('a-', seq), CONCAT('@louis', seq),
            CONCAT('louis.', seq, '@example.org'), CONCAT('louis_', seq),
            'FR7612345678901234567890123', '3 place Bellecour', '69003', 'Lyon', 1234.56,
            CURRENT_DATE FROM {_seq(amb)}""",
        f"""INSERT INTO distributor_orders SELECT seq, CONCAT('DN-', seq), 'DIST-NORD',
            CONCAT('D-', seq), NOW(), 'Paul Richard', NULL, '8 quai des Chartrons', '33000',
            'Bordeaux', 80 FROM {_seq(dist)}""",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()


# bench/sweep.py's BULK in MariaDB's words: one statement per table, whole tables.
BULK = [
    """UPDATE customers SET email = CONCAT('h:', MD5(email)), first_name = CONCAT('anon-',
       LEFT(MD5(id), 12)), last_name = '[redacted]', phone = NULL,
       birth_date = MAKEDATE(YEAR(birth_date), 1), street = NULL,
       postcode = LEFT(postcode, 2), city = NULL""",
    """UPDATE accounts SET login = CONCAT('h:', MD5(login)), password_hash = '[redacted]',
       last_login_at = TIMESTAMP(MAKEDATE(YEAR(last_login_at), 1)), last_ip = NULL""",
    """UPDATE orders SET ship_name = '[redacted]', ship_street = '[redacted]',
       ship_postcode = LEFT(ship_postcode, 2), ship_city = '[redacted]', gift_message = NULL""",
    "UPDATE invoices SET customer_email = NULL, customer_phone = NULL",
    "DELETE FROM navigation_logs",
    "DELETE FROM newsletter_subscribers",
    """UPDATE prospects SET name = CONCAT('anon-', LEFT(MD5(ref), 12)), email = NULL,
       phone = NULL, company = NULL, postcode = LEFT(postcode, 2), message = NULL,
       contacted_at = TIMESTAMP(MAKEDATE(YEAR(contacted_at), 1))""",
    "DELETE FROM candidates",
    """UPDATE ambassadors SET display_name = CONCAT('anon-', LEFT(MD5(ref), 12)),
       email = CONCAT('h:', MD5(email)), instagram = CONCAT('h:', MD5(instagram)), iban = NULL,
       street = NULL, postcode = LEFT(postcode, 2), city = NULL, fee = 1000""",
    """UPDATE distributor_orders SET customer_name = '[redacted]', phone = NULL,
       street = '[redacted]', postcode = LEFT(postcode, 2), city = '[redacted]'""",
]


def run_bulk_sql(shop: str) -> tuple[int, float]:
    engine = sa.create_engine(shop)
    rows = 0
    started = time.perf_counter()
    with engine.begin() as connection:
        for statement in BULK:
            rows += connection.execute(sa.text(statement)).rowcount
    took = time.perf_counter() - started
    engine.dispose()
    return rows, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    n = counts(args.subjects)
    print(f"{sum(n.values()):,} due subjects: " + ", ".join(f"{v:,} {k}" for k, v in n.items()))
    with database("store") as store, mariadb_database() as shop:
        started = time.perf_counter()
        fill_shop(shop, n)
        lifecycles = fill_store(store, n)
        print(
            f"filled the MariaDB shop and the PostgreSQL store ({lifecycles:,} due lifecycles) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        rows, took, erased = run_lethe_sweep(store, shop, args.batch, 1)
        sweep_rate = rows / took
        print(
            f"lethe sweep: {erased:,} lifecycles, {rows:,} rows in {took:.1f} s "
            f"= {sweep_rate:,.0f} rows/s ({erased / took:,.0f} lifecycles/s), batch {args.batch}"
        )
        fill_shop(shop, n)
        bulk_rows, bulk_took = run_bulk_sql(shop)
        bulk_rate = bulk_rows / bulk_took
        print(
            f"bulk SQL on MariaDB: {bulk_rows:,} rows in {bulk_took:.1f} s = {bulk_rate:,.0f} "
            "rows/s (one statement per table, one transaction)"
        )
        print(f"ratio sweep / bulk SQL: {sweep_rate / bulk_rate:.2f}")
    with database("store2") as store:
        fill_store(store, n)
        books = run_bookkeeping_sql(store)
    both = bulk_rows / (bulk_took + books)
    print(
        f"bulk SQL plus the sweep's bookkeeping in bulk SQL (audit rows, lifecycles, event "
        f"payloads: {books:.1f} s): {both:,.0f} rows/s; ratio sweep / that: "
        f"{sweep_rate / both:.2f}"
    )


if __name__ == "__main__":
    main()
