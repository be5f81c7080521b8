"""Outbox benchmark: the relay's rate against `emit_many`'s, in the same run.

    .venv/bin/python bench/outbox.py [--events 10000] [--rounds 2] [--shop mariadb|postgresql]

One PostgreSQL store, one Redis prefix and one real worker (bench/ingest.py's Setup), and a
shop database of the benchmark's own (MariaDB by default) with `lethe_outbox`:
  1. `emit_many`: N events sent from Python in batches of 500, timed until all are stored;
  2. the outbox: the same N events as rows of `lethe_outbox` (written beforehand, as the
     shop's transactions would have), relayed by `relay()` (what `lethe outbox relay`,
     the embedded worker and beat's task run), timed until all are stored and the
     outbox is empty.
After a warm-up, the two alternate `--rounds` times; prints events/s for each and the
ratio of the means (target >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

import sqlalchemy as sa
from ingest import POSTGRES_URL, Setup, realistic_events, timed

MARIADB_URL = os.environ.get("LETHE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


class Shop:
    """A shop database of the benchmark's own, dropped afterwards."""

    def __init__(self, kind: str):
        self.name = f"lethe_bench_shop_{uuid.uuid4().hex[:8]}"
        server = MARIADB_URL if kind == "mariadb" else POSTGRES_URL
        quote = "`" if kind == "mariadb" else '"'
        self.drop = f"DROP DATABASE IF EXISTS {quote}{self.name}{quote}"
        self.admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as c:
            c.execute(sa.text(f"CREATE DATABASE {quote}{self.name}{quote}"))
        self.url = f"{server.rsplit('/', 1)[0]}/{self.name}"
        self.engine = sa.create_engine(self.url)

    def fill(self, events: list[dict]) -> None:
        from worker.shop.outbox import outbox

        rows = [
            {
                "id": e["id"],
                "type": e["type"],
                "subject": e["subject"],
                "occurred_at": e["occurred_at"],
                "data": json.dumps(e["data"]),
                "match": None,
            }
            for e in events
        ]
        with self.engine.begin() as c:
            c.execute(outbox.insert().values(created_at=sa.func.now()), rows)

    def pending(self) -> int:
        with self.engine.connect() as c:
            return c.execute(sa.text("select count(*) from lethe_outbox")).scalar_one()

    def close(self) -> None:
        self.engine.dispose()
        with self.admin.connect() as c:
            c.execute(sa.text(self.drop + (" WITH (FORCE)" if '"' in self.drop else "")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shop", choices=["mariadb", "postgresql"], default="mariadb")
    args = parser.parse_args()
    shop = Shop(args.shop)
    os.environ["LETHE_SHOP_DATABASE_URL"] = shop.url
    setup = Setup(2, "redis")
    failed = True
    try:
        from worker.client import emit_many
        from worker.pipeline.outbox import relay
        from worker.settings import current_settings
        from worker.shop.outbox import install

        install(shop.url)
        events = realistic_events(args.events)
        print(
            f"{args.events} events; worker prefork 2; broker Redis, store PostgreSQL, "
            f"shop {args.shop}"
        )
        setup.start_worker()
        # the worker's first batches open connections and plans: not either side's cost
        warm = [{**e, "id": f"warm-{e['id']}"} for e in events[:1000]]
        emit_many(warm)
        while setup.stored() < len(warm):
            time.sleep(0.2)
        rates: dict[str, list[float]] = {"emit_many": [], "relay": []}
        for _ in range(args.rounds):  # alternated, so a busier minute hits both
            setup.reset_store()
            rates["emit_many"].append(
                timed(
                    "emit_many (batches of 500)",
                    lambda: emit_many(events),
                    lambda: setup.stored() >= len(events),
                    len(events),
                )
            )
            setup.reset_store()
            shop.fill(events)
            rates["relay"].append(
                timed(
                    "outbox relay (batches of 500)",
                    lambda: relay(current_settings()),
                    lambda: setup.stored() >= len(events) and shop.pending() == 0,
                    len(events),
                )
            )
        direct = sum(rates["emit_many"]) / args.rounds
        relayed = sum(rates["relay"]) / args.rounds
        print(f"ratio relay / emit_many: {relayed / direct:5.2f}  (target >= 0.8)")
        print(
            json.dumps(
                {
                    "events": len(events),
                    "shop": args.shop,
                    "emit_many_per_s": round(direct),
                    "relay_per_s": round(relayed),
                }
            )
        )
        failed = False
    finally:
        setup.close(failed)
        shop.close()


if __name__ == "__main__":
    main()
