"""Ingest benchmark: events through Redis or RabbitMQ into PostgreSQL, against no-op tasks.

    .venv/bin/python bench/ingest.py [--events 100000] [--concurrency 2] [--broker redis|rabbitmq]
                                     [--mix realistic|long-history]

In one run, on one machine, with the same broker, worker and settings:
  1. baseline: N no-op tasks (`lethe.noop`), one message per event, timed until
     every one has been processed (none left in the queue, none unacknowledged);
  2. `emit`: N events, one message each, timed until all are stored;
  3. `emit_many`: the same N events in batches, timed until all are stored.
Prints events/s for each and the ratios against the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("LETHE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
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
        if event_type == "contact.made":
            data["direction"] = rng.choice(["inbound", "outbound"])
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


def long_history_events(count: int, seed: int = 42) -> list[dict]:
    """The realistic mix for 70 % of the events; the rest from a tail of loyal customers
    who visit daily, 300 visits each (a shop some years old), all shuffled together."""
    rng = random.Random(seed)
    events = realistic_events(count - count * 3 // 10, seed)
    loyal = max(1, count * 3 // 10 // 300)
    for i in range(count - len(events)):
        n = i % loyal
        day = (i // loyal) % (6 * 365)
        occurred = time.strftime(
            "%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(1577836800 + day * 86400 + rng.randrange(86400))
        )
        events.append(
            {
                "id": f"l-{i}",
                "type": "visit.recorded",
                "subject": f"customer:loyal-{n}",
                "occurred_at": occurred,
                "data": {},
            }
        )
    rng.shuffle(events)
    return events


MIXES = {"realistic": realistic_events, "long-history": long_history_events}


class RedisBroker:
    """The events queue is a list, the messages workers hold an `unacked` hash."""

    label = "Redis"
    url = REDIS_URL

    def __init__(self, prefix: str):
        import redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(self.url)

    def processed(self) -> bool:
        queued = self.client.llen(f"{self.prefix}:{self.prefix}.events")
        unacked = self.client.hlen(f"{self.prefix}:unacked")
        return queued == 0 and unacked == 0

    def delete(self) -> None:
        for key in self.client.scan_iter(match=f"{self.prefix}*", count=1000):
            self.client.delete(key)


class RabbitMQBroker:
    """The events queue, and the exchanges the app names, all under the run's prefix."""

    label = "RabbitMQ"
    url = RABBITMQ_URL

    def __init__(self, prefix: str):
        from kombu import Connection

        self.queue = f"{prefix}.events"
        self.connection = Connection(self.url, connect_timeout=5)

    def processed(self) -> bool:
        # A passive queue_declare counts only ready messages: not those the worker's
        # processes prefetched (64 each) and acknowledge only once run (acks_late), so
        # it says 0 up to 128 tasks early. `rabbitmqctl list_queues ... messages` counts
        # ready + unacknowledged, asked of the queue process itself (not sampled
        # statistics), but starts a CLI VM (about 0.3 s, on the two cores being
        # measured): so it is asked only once the cheap count has reached 0.
        ready = self.connection.default_channel.queue_declare(self.queue, passive=True)
        if ready.message_count:
            return False
        listing = subprocess.run(
            ["rabbitmqctl", "--quiet", "list_queues", "--no-table-headers", "name", "messages"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        counts = dict(line.split("\t") for line in listing.splitlines() if "\t" in line)
        return int(counts[self.queue]) == 0

    def delete(self) -> None:
        """The names worker/app.py gives (the worker's own remote-control queue expires)."""
        from worker.app import app

        control = app.conf.control_exchange
        channel = self.connection.default_channel
        channel.queue_delete(self.queue)  # RabbitMQ deletes what does not exist without a word
        for exchange in (
            self.queue,
            f"{control}.pidbox",
            f"reply.{control}.pidbox",
            app.conf.event_exchange,
        ):
            channel.exchange_delete(exchange)
        self.connection.release()


BROKERS = {"redis": RedisBroker, "rabbitmq": RabbitMQBroker}


class Setup:
    """A database and a broker prefix of the benchmark's own, and a real worker on them."""

    def __init__(self, concurrency: int, broker: str):
        self.name = f"lethe_bench_{uuid.uuid4().hex[:8]}"
        self.prefix = f"lethe-bench-{uuid.uuid4().hex[:8]}"
        self.broker = BROKERS[broker](self.prefix)
        self.admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{self.name}"
        # the worker's home and log; kept only when the run fails, for its log
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.env = {
            **os.environ,
            "LETHE_BROKER_URL": self.broker.url,
            "LETHE_DATABASE_URL": self.url,
            "LETHE_SECRET": uuid.uuid4().hex * 2,
            "LETHE_QUEUE_PREFIX": self.prefix,
            "LETHE_LOG_FORMAT": "json",
            "LETHE_HOME": str(self.folder / "home"),
        }
        os.environ.update(self.env)
        subprocess.run(
            [str(BIN / "lethe"), "db", "upgrade"], env=self.env, check=True, capture_output=True
        )
        self.concurrency = concurrency
        self.store = sa.create_engine(self.url)
        self.worker: subprocess.Popen | None = None

    def start_worker(self) -> None:
        self.log = open(self.folder / "worker.log", "w")  # noqa: SIM115
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

    def stored(self) -> int:
        with self.store.connect() as c:
            return c.execute(sa.text("select count(*) from events")).scalar_one()

    def reset_store(self) -> None:
        with self.store.begin() as c:
            c.execute(sa.text("truncate events, lifecycles, dead_letters"))

    def close(self, failed: bool) -> None:
        self.stop_worker()
        self.store.dispose()
        self.broker.delete()
        with self.admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        if failed:
            print(f"the worker's log: {self.folder / 'worker.log'}", file=sys.stderr)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


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
    parser.add_argument("--broker", choices=sorted(BROKERS), default="redis")
    parser.add_argument(
        "--mix",
        choices=sorted(MIXES),
        default="realistic",
        help="long-history: 30 %% of the events from loyal customers with 300 visits each",
    )
    args = parser.parse_args()
    setup = Setup(args.concurrency, args.broker)
    failed = True
    try:
        from worker.app import NOOP_TASK, app
        from worker.client import emit, emit_many

        events = MIXES[args.mix](args.events)
        print(
            f"{args.events} events, {len({e['subject'] for e in events})} subjects; "
            f"worker: prefork concurrency {args.concurrency}, prefetch "
            f"{app.conf.worker_prefetch_multiplier}, acks_late; "
            f"broker {setup.broker.label}, store PostgreSQL"
        )
        setup.start_worker()

        def send_noop() -> None:
            for event in events:
                app.send_task(NOOP_TASK, args=[event])

        baseline = timed(
            "no-op task, one per event", send_noop, setup.broker.processed, len(events)
        )

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
                    "broker": args.broker,
                }
            )
        )
        failed = False
    finally:
        setup.close(failed)


if __name__ == "__main__":
    main()
