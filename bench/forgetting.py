"""Forgetting benchmark: what the nightly pass that deletes the records of people erased
long ago (worker/sweeps/forgetting.py, LETHE_FORGET_AFTER_DAYS) costs, against hand-written
bulk SQL deleting the same rows.

    .venv/bin/python bench/forgetting.py [--forgotten 100000] [--kept 100000] [--page 2000]

A PostgreSQL store (migrated as `lethe db upgrade` does) holds N people whose every
lifecycle was erased two years ago (two lifecycles and three events each: the
rows to delete), M people still kept beside them (one lifecycle active, one erased a
month ago, three events each), a few hundred of the erased ones held by hand or by a
dispute still open (they stay). The real pass (`forgetting.forget`, pages of
LETHE_SWEEP_BATCH lifecycles, each page one transaction under ingestion's locks)
runs on it; then the store is filled again and one hand-written transaction deletes
the same rows: the events, then the lifecycles, of the subjects whose every lifecycle
was erased before the period, minus the held ones. Prints rows/s for both and the
ratio; both must leave exactly the same rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweep import database  # noqa: E402  (bench/sweep.py: a database of our own)

HELD = 200  # held by hand
DISPUTED = 200  # a dispute opened and never closed


def fill(url: str, forgotten: int, kept: int) -> None:
    from worker.store.migrate import upgrade

    upgrade(url)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for prefix, count, second in (
            ("customer:gone-", forgotten, "now() - interval '2 years'"),
            ("customer:kept-", kept, "NULL"),
        ):
            # two lifecycles per person: erased two years ago, and (the kept ones) active
            connection.execute(
                sa.text(
                    f"""INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at,
                    state, "then", updated_at, erased_at)
                    SELECT '{prefix}' || i, a.activity, now() - interval '8 years',
                    now() - interval '2 years', 'erased', 'erase',
                    now() - interval '2 years', now() - interval '2 years'
                    FROM generate_series(1, {count}) i,
                    (VALUES ('website.navigation')) a(activity)"""
                )
            )
            connection.execute(
                sa.text(
                    f"""INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at,
                    state, "then", updated_at, erased_at)
                    SELECT '{prefix}' || i, 'crm.customers', now() - interval '6 years',
                    now() - interval '1 year' + interval '2 years' * ({second} IS NULL)::int,
                    CASE WHEN {second} IS NULL THEN 'active' ELSE 'erased' END, 'anonymise',
                    coalesce({second}, now()), {second}
                    FROM generate_series(1, {count}) i"""
                )
            )
            connection.execute(
                sa.text(
                    f"""INSERT INTO events (id, type, subject, occurred_at, data, received_at)
                    SELECT '{prefix}' || i || '-' || n, 'order.closed', '{prefix}' || i,
                    now() - interval '6 years', '{{}}', now() - interval '6 years'
                    FROM generate_series(1, {count}) i, generate_series(1, 3) n"""
                )
            )
        connection.execute(
            sa.text(
                f"""INSERT INTO holds (subject, reason, placed_at)
                SELECT 'customer:gone-' || i, 'case LIT-7', now()
                FROM generate_series(1, {HELD}) i"""
            )
        )
        connection.execute(
            sa.text(
                f"""INSERT INTO events (id, type, subject, occurred_at, data, received_at)
                SELECT 'dispute-' || i, 'dispute.opened', 'customer:gone-' || i,
                now() - interval '3 years', ('{{"case": "LIT-' || i || '"}}')::json,
                now() - interval '3 years'
                FROM generate_series({HELD + 1}, {HELD + DISPUTED}) i"""
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()


def counts(url: str) -> tuple[int, int]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        found = tuple(
            connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("events", "lifecycles")
        )
    engine.dispose()
    return found


def run_lethe(url: str, page: int) -> tuple[int, float]:
    from worker.domain.register_file import default_register_path, load_register
    from worker.sweeps import forgetting

    register = load_register(default_register_path())
    since = datetime.now(UTC) - timedelta(days=365)
    started = time.perf_counter()
    done = forgetting.forget(url, register, since, since, page)
    took = time.perf_counter() - started
    return done.events + done.lifecycles, took


# The same rows, by hand: people whose every lifecycle was erased before the period, who
# have no hold in force and no dispute opened (the bench's disputes are never closed).
GONE = """
    SELECT subject FROM lifecycles GROUP BY subject
    HAVING bool_and(state = 'erased' AND erased_at < now() - interval '365 days'
                    AND updated_at < now() - interval '365 days')
    EXCEPT SELECT subject FROM holds WHERE lifted_at IS NULL
    EXCEPT SELECT subject FROM events WHERE type = 'dispute.opened'
"""


def run_bulk_sql(url: str) -> tuple[int, float]:
    engine = sa.create_engine(url)
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE TEMP TABLE gone AS {GONE}"))
        rows = connection.execute(
            sa.text("DELETE FROM events WHERE subject IN (SELECT subject FROM gone)")
        ).rowcount
        rows += connection.execute(
            sa.text("DELETE FROM lifecycles WHERE subject IN (SELECT subject FROM gone)")
        ).rowcount
    took = time.perf_counter() - started
    engine.dispose()
    return rows, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forgotten", type=int, default=100_000)
    parser.add_argument("--kept", type=int, default=100_000)
    from worker.settings import SweepSettings

    parser.add_argument(
        "--page", type=int, default=SweepSettings.batch, help="LETHE_SWEEP_BATCH, its default"
    )
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    print(
        f"{args.forgotten:,} people erased two years ago ({HELD + DISPUTED} of them held), "
        f"{args.kept:,} kept; page {args.page}"
    )
    with database("forget") as url:
        started = time.perf_counter()
        fill(url, args.forgotten, args.kept)
        before = counts(url)
        print(
            f"filled: {before[0]:,} events, {before[1]:,} lifecycles in "
            f"{time.perf_counter() - started:.1f} s"
        )
        rows, took = run_lethe(url, args.page)
        lethe_left = counts(url)
    with database("forget_bulk") as url:
        fill(url, args.forgotten, args.kept)
        bulk_rows, bulk_took = run_bulk_sql(url)
        bulk_left = counts(url)
    assert lethe_left == bulk_left, (lethe_left, bulk_left)
    assert rows == bulk_rows, (rows, bulk_rows)
    print(f"lethe forgetting: {rows:,} rows in {took:.1f} s = {rows / took:,.0f} rows/s")
    print(
        f"bulk SQL:         {bulk_rows:,} rows in {bulk_took:.1f} s = "
        f"{bulk_rows / bulk_took:,.0f} rows/s (one transaction)"
    )
    print(
        f"ratio forgetting / bulk SQL: {(rows / took) / (bulk_rows / bulk_took):.2f}; "
        f"left in both: {lethe_left[0]:,} events, {lethe_left[1]:,} lifecycles"
    )


if __name__ == "__main__":
    main()
