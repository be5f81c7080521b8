"""Ingest benchmark: events through Redis into PostgreSQL, against no-op Celery tasks.

    .venv/bin/python bench/ingest.py [--events 100000] [--concurrency 2]

In one run, on one machine, with the same broker, worker and settings:
  1. baseline: N no-op tasks (`lethe.noop`), one message per event, timed until
     the queue is drained;
  2. `emit`: N events, one message each, timed until all are stored;
  3. `emit_many`: the same N events in batches, timed until all are stored.
Prints events/s for each and the ratios against the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "LETHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

# (kind, share of subjects, event types it emits)
MIX = [
    (
        "customer",
        0.55,
        [
            "order.closed",
            "contact.made",
            "invoice.issued",
            "visit.recorded",
            "newsletter.subscribed",
        ],
    ),
    ("visitor", 0.20, ["visit.recorded", "newsletter.subscribed", "newsletter.unsubscribed"]),
    ("prospect", 0.10, ["contact.made", "visit.recorded"]),
    ("candidate", 0.05, ["candidate.applied", "candidate.rejected", "contact.made"]),
    ("ambassador", 0.04, ["contact.made", "ambassador.contract_ended", "invoice.issued"]),
    ("distributor-customer", 0.06, ["order.closed"]),
]


def realistic_events(count: int, seed: int = 42) -> list[dict]:
    """About 4 events per subject, kinds and types in shop-like proportions."""
    rng = random.Random(seed)
    subjects = max(1, count // 4)
    kinds = rng.choices([m[0] for m in MIX], weights=[m[1] for m in MIX], k=subjects)
    types = {m[0]: m[2] for m in MIX}
    events = []
    for i in range(count):
        n = rng.randrange(subjects)
        kind = kinds[n]
        data: dict = {}
        event_type = rng.choice(types[kind])
        if kind == "distributor-customer":
            data["distributor"] = rng.choice(["DIST-NORD", "DIST-SUD", "DIST-EST"])
        if event_type == "candidate.rejected":
            data["keep"] = rng.random() < 0.3
        day = rng.randrange(0, 6 * 365)
        occurred = time.strftime(
            "%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(1577836800 + day * 86400 + rng.randrange(86400))
        )
        events.append(
            {
                "id": f"b-{i}",
                "type": event_type,
                "subject": f"{kind}:{n}",
                "occurred_at": occurred,
                "data": data,
            }
        )
    return events


class Setup:
    """A database and a Redis prefix of the benchmark's own, and a real worker on them."""

    def __init__(self, concurrency: int):
        self.name = f"lethe_bench_{uuid.uuid4().hex[:8]}"
        self.prefix = f"lethe-bench-{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{self.name}"
        self.env = {
            **os.environ,
            "LETHE_BROKER_URL": REDIS_URL,
            "LETHE_DATABASE_URL": self.url,
            "LETHE_SECRET": uuid.uuid4().hex * 2,
            "LETHE_QUEUE_PREFIX": self.prefix,
            "LETHE_LOG_FORMAT": "json",
            "LETHE_HOME": f"/tmp/{self.prefix}",
        }
        os.environ.update(self.env)
        subprocess.run(
            [str(BIN / "lethe"), "db", "upgrade"], env=self.env, check=True, capture_output=True
        )
        self.concurrency = concurrency
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.store = sa.create_engine(self.url)
        self.worker: subprocess.Popen | None = None

    def start_worker(self) -> None:
        self.log = open(f"/tmp/{self.prefix}-worker.log", "w")  # noqa: SIM115
        self.worker = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "worker.app",
                "worker",
                "--loglevel=WARNING",
                f"--concurrency={self.concurrency}",
                "-Q",
                f"{self.prefix}.events",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        time.sleep(4)

    def stop_worker(self) -> None:
        if self.worker:
            self.worker.terminate()
            self.worker.wait(60)

    def queue_empty(self) -> bool:
        queued = self.redis.llen(f"{self.prefix}:{self.prefix}.events")
        unacked = self.redis.hlen(f"{self.prefix}:unacked")
        return queued == 0 and unacked == 0

    def stored(self) -> int:
        with self.store.connect() as c:
            return c.execute(sa.text("select count(*) from events")).scalar_one()

    def reset_store(self) -> None:
        with self.store.begin() as c:
            c.execute(sa.text("truncate events, lifecycles, dead_letters"))

    def close(self) -> None:
        self.stop_worker()
        self.store.dispose()
        for key in self.redis.scan_iter(match=f"{self.prefix}*", count=1000):
            self.redis.delete(key)
        with self.admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def timed(label: str, send, done, total: int) -> float:
    start = time.perf_counter()
    send()
    sent = time.perf_counter() - start
    while not done():
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    rate = total / elapsed
    print(
        f"{label:<34} {total:>8} in {elapsed:7.2f}s (sent in {sent:6.2f}s)  {rate:9.0f} /s",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    setup = Setup(args.concurrency)
    try:
        from worker.app import NOOP_TASK, app
        from worker.client import emit, emit_many

        events = realistic_events(args.events)
        print(
            f"{args.events} events, {len({e['subject'] for e in events})} subjects; "
            f"worker: prefork concurrency {args.concurrency}, prefetch "
            f"{app.conf.worker_prefetch_multiplier}, acks_late; broker Redis, store PostgreSQL"
        )
        setup.start_worker()

        def send_noop() -> None:
            for event in events:
                app.send_task(NOOP_TASK, args=[event])

        baseline = timed("no-op task, one per event", send_noop, setup.queue_empty, len(events))

        def send_single() -> None:
            for event in events:
                emit(
                    event["type"],
                    subject=event["subject"],
                    occurred_at=event["occurred_at"],
                    id=event["id"],
                    data=event["data"],
                )

        single = timed(
            "emit, one per event", send_single, lambda: setup.stored() >= len(events), len(events)
        )
        setup.reset_store()
        batched = timed(
            "emit_many (batches of 500)",
            lambda: emit_many(events),
            lambda: setup.stored() >= len(events),
            len(events),
        )
        print(f"ratio emit / no-op:      {single / baseline:5.2f}  (target >= 0.7)")
        print(f"ratio emit_many / no-op: {batched / baseline:5.2f}  (target >= 5)")
        print(
            json.dumps(
                {
                    "events": len(events),
                    "noop_per_s": round(baseline),
                    "emit_per_s": round(single),
                    "emit_many_per_s": round(batched),
                    "concurrency": args.concurrency,
                }
            )
        )
    finally:
        setup.close()


if __name__ == "__main__":
    main()
