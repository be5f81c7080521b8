"""Sweep benchmark: Lethe's sweep against hand-written bulk SQL, and the cost of finding
what is due as the store grows.

    .venv/bin/python bench/sweep.py [--subjects 100000] [--batch 2000] [--stored 10000 1000000]

1. Throughput. A PostgreSQL shop (the demo shop's schema) with N due subjects
   spread over the register's targets (customers with an account, an order and
   an invoice; visitors' navigation logs; newsletter subscribers; prospects;
   candidates; ambassadors with an invoice; distributors' customers), and a
   PostgreSQL store with their due lifecycles and one event each. The sweep
   (approved first, as a new register's must be) erases them; then the shop is
   rebuilt and the same rows are anonymised or deleted by one hand-written
   statement per table (whole-table, no key lists: the most favourable case
   for bulk SQL). Prints rows/s for both and the ratio; then the same against the
   ceiling (bulk SQL plus the sweep's bookkeeping in bulk SQL), and, on Linux, the
   work each side does in the machine's busy CPU-seconds, with the best ratio the
   sweep's work could reach spread perfectly over the cores (its floor).
2. Scaling. Time to find 1,000 due lifecycles (the sweep's own query) among
   10,000 and among 1,000,000 stored ones (the rest erased or not yet due), and to
   claim them as a batch does (found and locked, then marked erased).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POSTGRES_URL = os.environ.get(
    "LETHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SECRET = "bench-secret-" + "x" * 20
# (kind, share of the due subjects)
MIX = [
    ("customer", 0.40),
    ("visitor", 0.20),
    ("newsletter", 0.10),
    ("prospect", 0.10),
    ("candidate", 0.08),
    ("ambassador", 0.02),
    ("distributor-customer", 0.10),
]


@contextmanager
def database(label: str) -> Iterator[str]:
    name = f"lethe_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        from worker.shop.binding import dispose_engines
        from worker.store.sessions import engine_for

        dispose_engines()
        engine_for.cache_clear()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def machine_busy() -> float | None:
    """CPU-seconds the whole machine has spent busy (every process: PostgreSQL's backends as
    well as this one), from Linux's /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:]]
    except OSError:
        return None
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def busy_since(start: float | None) -> float | None:
    now = machine_busy()
    return None if start is None or now is None else now - start


def counts(subjects: int) -> dict[str, int]:
    return {kind: int(subjects * share) for kind, share in MIX}


def fill_shop(url: str, n: dict[str, int]) -> None:
    """The demo shop's tables, filled by INSERT ... SELECT generate_series."""
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
        f"""INSERT INTO customers SELECT i, 'jeanne.martin.' || i || '@example.org', 'Jeanne',
            'Martin', '+33 6 12 34 56 78', date '1960-01-01' + (i % 15000), i || ' rue de la Paix',
            lpad(((i % 95) + 1)::text, 2, '0') || '008', 'Paris', now()
            FROM generate_series(1, {c}) i""",
        f"""INSERT INTO accounts SELECT i, 'jeanne.martin.' || i || '@example.org', 'argon2$abc',
            now(), '192.0.2.1' FROM generate_series(1, {c}) i WHERE i % 10 < 7""",
        f"""INSERT INTO orders SELECT i, i, 'A-' || i, now(), 'Jeanne Martin', '1 avenue Foch',
            '75008', 'Paris', 42.50, NULL FROM generate_series(1, {c}) i""",
        f"""INSERT INTO invoices SELECT i, 'F-' || i, i, NULL, current_date, 'Jeanne Martin',
            '1 bd Haussmann', '75008', 'Paris', 'jeanne.martin.' || i || '@example.org',
            '+33 6 12 34 56 78', 35.42, 7.08, 42.50 FROM generate_series(1, {c}) i""",
        f"""INSERT INTO invoices SELECT {c} + i, 'F-A' || i, NULL, 'a-' || i, current_date,
            'Louis Petit', '3 place Bellecour', '69003', 'Lyon', 'louis.' || i || '@example.org',
            NULL, 100, 20, 120 FROM generate_series(1, {amb}) i""",
        f"""INSERT INTO navigation_logs SELECT i, 'visitor:v-' || i, now(), '198.51.100.7',
            'Mozilla/5.0', '/catalogue' FROM generate_series(1, {v}) i""",
        f"""INSERT INTO newsletter_subscribers SELECT i, 'visitor:n-' || i,
            'reader.' || i || '@example.com', 'Léa', now() FROM generate_series(1, {nl}) i""",
        f"""INSERT INTO prospects SELECT i, 'p-' || i, 'Hugo Durand', 'hugo.' || i ||
            '@example.net', '+33 6 00 00 00 00', 'Durand SARL', '13001', 'Bonjour', now()
            FROM generate_series(1, {p}) i""",
        f"""INSERT INTO candidates SELECT i, 'c-' || i, 'Manon', 'Leroy', 'manon.' || i ||
            '@example.com', NULL, 'Lille', 'CV', now() FROM generate_series(1, {cand}) i""",
        f"""INSERT INTO ambassadors SELECT i, 'a-' || i, '@louis' || i, 'louis.' || i ||
            '@example.org', 'louis_' || i, 'FR7612345678901234567890123', '3 place Bellecour',
            '69003', 'Lyon', 1234.56, current_date FROM generate_series(1, {amb}) i""",
        f"""INSERT INTO distributor_orders SELECT i, 'DN-' || i, 'DIST-NORD', 'D-' || i, now(),
            'Paul Richard', NULL, '8 quai des Chartrons', '33000', 'Bordeaux', 80
            FROM generate_series(1, {dist}) i""",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
        connection.execute(sa.text("ANALYZE"))
    engine.dispose()


# (activity, subject prefix, how many, which count)
def lifecycle_sets(n: dict[str, int]) -> list[tuple[str, str, int, str]]:
    return [
        ("crm.customers", "customer:", n["customer"], "anonymise"),
        ("sales", "customer:", n["customer"], "anonymise"),
        ("website.accounts", "customer:", n["customer"], "anonymise"),
        ("website.navigation", "visitor:v-", n["visitor"], "delete"),
        ("newsletter", "visitor:n-", n["newsletter"], "delete"),
        ("website.prospects", "prospect:p-", n["prospect"], "anonymise"),
        ("recruitment", "candidate:c-", n["candidate"], "delete"),
        ("ambassadors", "ambassador:a-", n["ambassador"], "anonymise"),
        ("distributors.orders", "distributor-customer:DN-", n["distributor-customer"], "anonymise"),
    ]


def fill_store(url: str, n: dict[str, int]) -> int:
    from worker.store.migrate import upgrade

    upgrade(url)
    engine = sa.create_engine(url)
    total = 0
    with engine.begin() as connection:
        for activity, prefix, count, then in lifecycle_sets(n):
            connection.execute(
                sa.text(
                    f"""INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state,
                    "then", updated_at) SELECT '{prefix}' || i, '{activity}',
                    timestamptz '2019-06-01 10:00+00' + i * interval '1 second',
                    timestamptz '2024-06-01 10:00+00' + i * interval '1 second', 'active',
                    '{then}', now() FROM generate_series(1, {count}) i"""
                )
            )
            total += count
        for _, prefix, count, _ in lifecycle_sets(n)[2:]:
            connection.execute(
                sa.text(
                    f"""INSERT INTO events SELECT '{prefix}' || i || '-ev', 'contact.made',
                    '{prefix}' || i, timestamptz '2019-06-01 10:00+00',
                    '{{"channel":"form","direction":"inbound"}}', now()
                    FROM generate_series(1, {count}) i ON CONFLICT DO NOTHING"""
                )
            )
        connection.execute(sa.text("ANALYZE"))
    engine.dispose()
    return total


def settings_for(store: str, shop: str, batch: int, parts: int = 1):
    from worker.settings import load_settings

    return load_settings(
        {
            "LETHE_SWEEP_PARTS": str(parts),
            "LETHE_HOME": str(ROOT / "var" / "bench"),
            "LETHE_BROKER_URL": "redis://127.0.0.1:6379/0",
            "LETHE_DATABASE_URL": store,
            "LETHE_SHOP_DATABASE_URL": shop,
            "LETHE_SECRET": SECRET,
            "LETHE_SWEEP_BATCH": str(batch),
        }
    )


def run_lethe_sweep(store: str, shop: str, batch: int, parts: int) -> tuple[int, float, int]:
    """The sweep as beat runs it: planned, stopped for approval, approved, then erased by
    `parts` processes sharing the run (each a worker's `lethe.sweep_part`)."""
    import multiprocessing

    import pendulum

    from worker.domain.register_file import default_register_path, load_register
    from worker.sweeps.run import approve, open_run, run_sweep
    from worker.sweeps.runs import load_run

    settings = settings_for(store, shop, batch, parts)
    register = load_register(default_register_path())
    moment = pendulum.parse("2026-11-26T03:00:00+01:00")
    run_id = open_run(settings, register, now=moment)
    planned = run_sweep(settings, register, run_id)
    assert planned.status == "awaiting_approval", planned
    approve(settings, register, run_id)
    context = multiprocessing.get_context("spawn")
    workers = []

    def spawn(run: int, n: int) -> None:
        for _ in range(n):
            process = context.Process(target=_part, args=(store, shop, batch, run))
            process.start()
            workers.append(process)

    started = time.perf_counter()
    run_sweep(settings, register, run_id, spawn_parts=spawn if parts > 1 else None)
    for process in workers:
        process.join()
    took = time.perf_counter() - started
    final = load_run(settings, run_id)
    assert final.status == "done" and final.failed == 0, (final.status, final.note)
    return final.rows, took, final.erased


def _part(store: str, shop: str, batch: int, run_id: int) -> None:
    import logging

    logging.disable(logging.WARNING)
    from worker.domain.register_file import default_register_path, load_register
    from worker.shop.binding import bind_targets, shop_engine
    from worker.sweeps.erasure import run_part
    from worker.sweeps.run import finish_part
    from worker.sweeps.runs import load_run

    settings = settings_for(store, shop, batch)
    register = load_register(default_register_path())
    bound = bind_targets(register, settings.register_path, shop_engine(shop), settings.secret)
    run_part(settings, register, bound, run_id, load_run(settings, run_id).now_at)
    finish_part(settings, run_id)


# One statement per table: the same columns, the same kind of values.
BULK = [
    """UPDATE customers SET email = 'h:' || md5(email), first_name = 'anon-' ||
       left(md5(id::text), 12), last_name = '[redacted]', phone = NULL,
       birth_date = date_trunc('year', birth_date)::date, street = NULL,
       postcode = left(postcode, 2), city = NULL""",
    """UPDATE accounts SET login = 'h:' || md5(login), password_hash = '[redacted]',
       last_login_at = date_trunc('year', last_login_at), last_ip = NULL""",
    """UPDATE orders SET ship_name = '[redacted]', ship_street = '[redacted]',
       ship_postcode = left(ship_postcode, 2), ship_city = '[redacted]', gift_message = NULL""",
    "UPDATE invoices SET customer_email = NULL, customer_phone = NULL",
    "DELETE FROM navigation_logs",
    "DELETE FROM newsletter_subscribers",
    """UPDATE prospects SET name = 'anon-' || left(md5(ref), 12), email = NULL, phone = NULL,
       company = NULL, postcode = left(postcode, 2), message = NULL,
       contacted_at = date_trunc('year', contacted_at)""",
    "DELETE FROM candidates",
    """UPDATE ambassadors SET display_name = 'anon-' || left(md5(ref), 12),
       email = 'h:' || md5(email), instagram = 'h:' || md5(instagram), iban = NULL,
       street = NULL, postcode = left(postcode, 2), city = NULL, fee = 1000""",
    """UPDATE distributor_orders SET customer_name = '[redacted]', phone = NULL,
       street = '[redacted]', postcode = left(postcode, 2), city = '[redacted]'""",
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


# What the sweep writes in Lethe's store besides the shop rows, as set-based SQL: one
# audit row per (lifecycle, target), the lifecycle marked, the event payloads dropped.
BOOKKEEPING = [
    """INSERT INTO purge_runs (id, schedule, now_at, started_at, status)
       VALUES (999999, 'bulk', now(), now(), 'done')""",
    """INSERT INTO erasures (run_id, subject_ref, activity, rule, target, columns, strategy,
       outcome, rows, erased_at)
       SELECT 999999, 's-' || left(md5(subject), 32), activity, activity || ': rule', t.target,
       'email,first_name', 'email:keyed_hash', 'erased', 1, now()
       FROM lifecycles CROSS JOIN LATERAL (SELECT unnest(CASE WHEN activity = 'crm.customers'
       THEN ARRAY['customers', 'invoices', 'invoices'] WHEN activity = 'ambassadors'
       THEN ARRAY['ambassadors', 'invoices', 'invoices'] ELSE ARRAY['t'] END) AS target) t
       WHERE state = 'active' AND deadline_at <= now()""",
    "UPDATE lifecycles SET state = 'erased', updated_at = now() WHERE state = 'active'",
    "UPDATE events SET data = '{}'",
]


def run_bookkeeping_sql(store: str) -> float:
    engine = sa.create_engine(store)
    started = time.perf_counter()
    with engine.begin() as connection:
        for statement in BOOKKEEPING:
            connection.execute(sa.text(statement))
    took = time.perf_counter() - started
    engine.dispose()
    return took


def claim_time(stored: int, due: int = 1_000, repeats: int = 15) -> tuple[float, float]:
    """Median seconds to find `due` due lifecycles among `stored` (the sweep's query, rows
    locked), and to claim them as a sweep's batch does (found and locked, then marked
    erased); each attempt rolled back."""
    import pendulum
    from sqlalchemy.orm import Session

    from worker.sweeps.claims import claim_batch, claim_statement

    with database(f"scale{stored}") as url:
        from worker.store.migrate import upgrade

        upgrade(url)
        engine = sa.create_engine(url)
        rest = stored - due
        with engine.begin() as connection:
            # 40 % erased long ago, 60 % not yet due, plus the due ones and a few holds.
            connection.execute(
                sa.text(
                    f"""INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state,
                    "then", updated_at) SELECT 'customer:' || i, 'crm.customers', now(),
                    CASE WHEN i % 10 < 4 THEN timestamptz '2020-01-01' + i * interval '1 second'
                         ELSE timestamptz '2030-01-01' + i * interval '1 second' END,
                    CASE WHEN i % 10 < 4 THEN 'erased' ELSE 'active' END, 'anonymise', now()
                    FROM generate_series(1, {rest}) i"""
                )
            )
            connection.execute(
                sa.text(
                    f"""INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state,
                    "then", updated_at) SELECT 'visitor:v-' || i, 'website.navigation', now(),
                    timestamptz '2025-01-01' + i * interval '1 minute', 'active', 'delete', now()
                    FROM generate_series(1, {due}) i"""
                )
            )
            connection.execute(
                sa.text(
                    """INSERT INTO holds (subject, reason, placed_at) SELECT 'customer:' || i,
                    'case', now() FROM generate_series(1, 100) i"""
                )
            )
        raw = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with raw.connect() as connection:
            connection.execute(sa.text("VACUUM ANALYZE lifecycles"))
            connection.execute(sa.text("VACUUM ANALYZE holds"))
        raw.dispose()
        now = pendulum.parse("2026-11-26T03:00:00+01:00")
        run = 1  # no erasure failed in it, as in a sweep's first batch
        finds, claims = [], []
        for _ in range(repeats):
            with Session(engine) as session:
                started = time.perf_counter()
                found = session.execute(claim_statement(run, now, None, due)).all()
                finds.append(time.perf_counter() - started)
                session.rollback()
            assert len(found) == due, len(found)
            with Session(engine) as session:
                started = time.perf_counter()
                claimed = claim_batch(session, run, now, None, due)
                claims.append(time.perf_counter() - started)
                session.rollback()
            assert len(claimed) == due, len(claimed)
        engine.dispose()
        return statistics.median(finds), statistics.median(claims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--parts", type=int, default=1, help="processes sharing the sweep")
    parser.add_argument("--stored", type=int, nargs="*", default=[10_000, 1_000_000])
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)

    if not args.skip_throughput:
        n = counts(args.subjects)
        print(f"{sum(n.values()):,} due subjects: " + ", ".join(f"{v:,} {k}" for k, v in n.items()))
        with database("store") as store, database("shop") as shop:
            started = time.perf_counter()
            fill_shop(shop, n)
            lifecycles = fill_store(store, n)
            print(
                f"filled shop and store ({lifecycles:,} due lifecycles) in "
                f"{time.perf_counter() - started:.1f} s"
            )
            busy = machine_busy()
            rows, took, erased = run_lethe_sweep(store, shop, args.batch, args.parts)
            sweep_work = busy_since(busy)
            sweep_rate = rows / took
            print(
                f"lethe sweep: {erased:,} lifecycles, {rows:,} rows in {took:.1f} s "
                f"= {sweep_rate:,.0f} rows/s ({erased / took:,.0f} lifecycles/s), "
                f"batch {args.batch}, {args.parts} process(es)"
            )
            fill_shop(shop, n)
            busy = machine_busy()
            bulk_rows, bulk_took = run_bulk_sql(shop)
            bulk_work = busy_since(busy)
            bulk_rate = bulk_rows / bulk_took
            print(
                f"bulk SQL:    {bulk_rows:,} rows in {bulk_took:.1f} s = {bulk_rate:,.0f} rows/s "
                f"(one statement per table, one transaction)"
            )
            print(f"ratio sweep / bulk SQL: {sweep_rate / bulk_rate:.2f} (target >= 0.5)")
        with database("store2") as store:
            fill_store(store, n)
            busy = machine_busy()
            books = run_bookkeeping_sql(store)
            books_work = busy_since(busy)
            both = bulk_rows / (bulk_took + books)
            print(
                f"bulk SQL plus the sweep's bookkeeping in bulk SQL (audit rows, lifecycles, "
                f"event payloads: {books:.1f} s): {both:,.0f} rows/s; "
                f"ratio sweep / that: {sweep_rate / both:.2f}"
            )
            # the per-erasure audit rows, lifecycle states and scrubbed payloads
            # are written by any sweep, however it is built: what that leaves of the target
            print(
                f"ceiling for a sweep that writes that bookkeeping, in one process: "
                f"{both / bulk_rate:.2f} of bulk SQL (the target, 0.5, lies above it "
                f"whenever the bookkeeping costs more than the shop's own statements)"
            )
            if sweep_work is not None and bulk_work is not None and books_work is not None:
                # The floor of this sweep's design on this machine: its work, however well
                # its stages overlap, cannot take less than its CPU-seconds over the cores.
                cores = os.cpu_count() or 1
                best = sweep_work / cores
                print(
                    f"work (the machine's busy CPU-seconds, every process; run it on a quiet "
                    f"machine): sweep {sweep_work:.1f} over {took:.1f} s "
                    f"({sweep_work / took / cores:.0%} of {cores} cores), ceiling "
                    f"{bulk_work + books_work:.1f}; the sweep's work spread perfectly over "
                    f"the {cores} cores would take {best:.1f} s: at best "
                    f"{rows / best / both:.2f} of the ceiling"
                )
    if args.stored:
        timings = {stored: claim_time(stored) for stored in args.stored}
        for stored, (find, claim) in timings.items():
            print(
                f"find 1,000 due among {stored:,} stored: {find * 1000:.1f} ms; claim them "
                f"(found, locked, marked): {claim * 1000:.1f} ms (medians of 15)"
            )
        if len(timings) >= 2:
            for label, which in (("find", 0), ("claim", 1)):
                values = [t[which] for t in timings.values()]
                print(
                    f"{label}: ratio largest / smallest store "
                    f"{max(values) / min(values):.2f} (target <= 2)"
                )


if __name__ == "__main__":
    main()
