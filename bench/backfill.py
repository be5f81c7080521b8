"""Backfill memory: the rows of a source read and turned into events, 100,000 then 1,000,000
rows, with the peak of Python's allocations for each; flat means the ratio stays near 1.

A SQLite shop of its own in a temporary folder holds a PrestaShop-style `ps_orders`
(naive DATETIMEs); the events go through the same path as `lethe backfill --dry-run`
up to the queue (keyset reads, instants in the register's zone, templates filled),
without a broker. Usage: .venv/bin/python bench/backfill.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from worker.domain.sources import Source
from worker.pipeline.backfill import SourceReport, _events
from worker.shop.sources import BoundSource


def _shop(path: Path, rows: int) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE ps_orders (id_order INTEGER PRIMARY KEY, id_customer INTEGER, "
                "date_upd DATETIME, valid INTEGER)"
            )
        )
        start = datetime(2015, 1, 1)
        step = 10_000
        for low in range(0, rows, step):
            connection.execute(
                sa.text("INSERT INTO ps_orders VALUES (:i, :c, :d, 1)"),
                [
                    {"i": i, "c": i % 50_000, "d": start + timedelta(minutes=i)}
                    for i in range(low + 1, min(rows, low + step) + 1)
                ],
            )
    return engine


def _measure(engine: sa.Engine, rows: int) -> tuple[float, float, int]:
    source = Source(
        event="order.closed",
        table="ps_orders",
        subject="customer:{id_customer}",
        at="date_upd",
        id="order-{id_order}-closed",
        where="valid = 1",
    )
    table = sa.Table("ps_orders", sa.MetaData(), autoload_with=engine)
    bound = BoundSource(1, source, table, ("id_order",))
    report = SourceReport(1, source.event, source.origin)
    tracemalloc.start()
    began = time.perf_counter()
    sent = sum(1 for _ in _events(engine, bound, "Europe/Paris", None, report, None))
    seconds = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sent == rows, (sent, rows)
    return peak / 2**20, seconds, sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        small = max(1, args.rows // 10)
        base = _measure(_shop(Path(folder) / "small.sqlite3", small), small)
        big = _measure(_shop(Path(folder) / "big.sqlite3", args.rows), args.rows)
    for n, (peak, seconds, _) in ((small, base), (args.rows, big)):
        print(f"{n:>9,} rows: peak {peak:6.2f} MiB, {seconds:6.1f} s, {n / seconds:,.0f} rows/s")
    print(f"peak memory ratio (x10 rows): {big[0] / base[0]:.2f}")


if __name__ == "__main__":
    main()
