"""Recovery benchmark: how soon a SIGKILLed worker's messages are back on their Redis queue.

    .venv/bin/python bench/recovery.py [--kills 10] [--stops 3]

One PostgreSQL database and one Redis key prefix of its own; a survivor worker runs
throughout (`celery -A worker.app worker`, prefork, concurrency 2, the project's settings,
the default visibility timeout of an hour). Each trial starts a second worker in a process
group of its own, sends 10,000 events (20 messages of 500), waits until that worker holds
some of them unacknowledged (its held set, worker/brokers/consumers.py), then signals its
whole group, and times from the signal until none of the messages it held is left in
kombu's `unacked` hash (each is then back on the queue, or already stored):

  1. baseline: SIGTERM, a warm shutdown: the worker finishes its running tasks and gives
     back the others itself (kombu's restore at shutdown);
  2. SIGKILL: nothing of the worker runs; the survivor gives its messages back once its
     heartbeat is DEAD_AFTER_SECONDS old.

Prints the median and worst of each, and the ratios against the baseline and against
what a SIGKILL cost before (the visibility timeout, one hour).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "LETHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
VISIBILITY_TIMEOUT = 3600  # worker/app.py's default: what a SIGKILL cost before
EVENTS_PER_TRIAL = 10_000


class Setup:
    def __init__(self) -> None:
        self.name = f"lethe_bench_{uuid.uuid4().hex[:8]}"
        self.prefix = f"lethe-bench-{uuid.uuid4().hex[:8]}"
        self.admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{self.name}"
        self.folder = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.env = {
            **os.environ,
            "LETHE_BROKER_URL": REDIS_URL,
            "LETHE_DATABASE_URL": self.url,
            "LETHE_SECRET": uuid.uuid4().hex * 2,
            "LETHE_QUEUE_PREFIX": self.prefix,
            "LETHE_LOG_FORMAT": "json",
            "LETHE_HOME": str(self.folder / "home"),
        }
        self.env.pop("LETHE_VISIBILITY_TIMEOUT", None)
        os.environ.update(self.env)
        subprocess.run(
            [str(BIN / "lethe"), "db", "upgrade"], env=self.env, check=True, capture_output=True
        )
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.store = sa.create_engine(self.url)
        self.workers: list[subprocess.Popen] = []
        self.sent = 0
        self.lost = 0  # events never stored: see trial()

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def start_worker(self) -> subprocess.Popen:
        log = self.folder / f"worker-{len(self.workers)}.log"
        with log.open("w") as out:
            worker = subprocess.Popen(
                [str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel=INFO",
                 "-Q", f"{self.prefix}.events", "--without-mingle", "--without-gossip"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.workers.append(worker)
        deadline = time.monotonic() + 60
        while "ready" not in log.read_text():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        return worker

    def send(self, count: int) -> None:
        from worker.client import emit_many

        first, self.sent = self.sent, self.sent + count
        emit_many(
            {
                "type": "order.closed" if i % 3 else "contact.made",
                "subject": f"customer:{i % 4999}",
                "id": f"r-{i}",
                "occurred_at": f"20{20 + i % 6}-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00Z",
            }
            for i in range(first, first + count)
        )

    def held(self, worker: subprocess.Popen) -> list[bytes]:
        """What this worker's consumer (its main process: the id starts with its pid)
        holds and is still unacknowledged."""
        for consumer in self.redis.zrange(self.key("lethe.consumers"), 0, -1):
            if consumer.decode().startswith(f"{worker.pid}-"):
                tags = list(self.redis.smembers(self.key(f"lethe.held.{consumer.decode()}")))
                return self.unacked(tags)
        return []

    def unacked(self, tags: list[bytes]) -> list[bytes]:
        if not tags:
            return []
        present = self.redis.hmget(self.key("unacked"), tags)
        return [tag for tag, value in zip(tags, present, strict=True) if value is not None]

    def stored(self) -> int:
        with self.store.connect() as c:
            return c.execute(sa.text("select count(*) from events")).scalar_one()

    def trial(self, sig: int) -> float:
        doomed = self.start_worker()
        self.send(EVENTS_PER_TRIAL)
        deadline = time.monotonic() + 60
        while len(tags := self.held(doomed)) < 2:
            assert time.monotonic() < deadline, "the worker took no message"
            time.sleep(0.05)
        os.killpg(doomed.pid, sig)
        signalled = time.monotonic()
        while self.unacked(tags):
            time.sleep(0.05)
        seconds = time.monotonic() - signalled
        doomed.wait(120)
        deadline = time.monotonic() + 60
        while self.stored() < self.sent - self.lost and time.monotonic() < deadline:
            time.sleep(0.5)  # the next trial starts with nothing left over
        # what is still missing was taken off the queue (BRPOP) and never recorded as
        # unacknowledged: the worker died within that round trip (docs: still open)
        self.lost = self.sent - self.stored()
        return seconds

    def close(self, keep: bool = False) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(30)
        self.store.dispose()
        if keep:
            print(f"kept: the workers' logs in {self.folder}, Redis keys under {self.prefix}")
            return
        for key in self.redis.scan_iter(match=f"{self.prefix}*", count=1000):
            self.redis.delete(key)
        with self.admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        shutil.rmtree(self.folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--stops", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep logs, keys and database")
    options = parser.parse_args()
    setup = Setup()
    try:
        setup.start_worker()  # the survivor
        figures = {}
        for label, sig, trials in (
            ("SIGTERM (baseline)", signal.SIGTERM, options.stops),
            ("SIGKILL", signal.SIGKILL, options.kills),
        ):
            times = []
            for n in range(trials):
                times.append(setup.trial(sig))
                print(f"{label} {n + 1}: {times[-1]:.1f} s", flush=True)
            figures[label] = (statistics.median(times), max(times))
    finally:
        setup.close(options.keep)
    (term, term_worst), (kill, kill_worst) = figures.values()
    print(json.dumps({"events_per_trial": EVENTS_PER_TRIAL, **{
        k: {"median_s": round(m, 1), "worst_s": round(w, 1)} for k, (m, w) in figures.items()
    }}))  # fmt: skip
    print(
        f"events lost (taken off the queue by a worker killed before it recorded them): "
        f"{setup.lost} of {setup.sent}"
    )
    print(f"SIGTERM: median {term:.1f} s, worst {term_worst:.1f} s")
    print(f"SIGKILL: median {kill:.1f} s, worst {kill_worst:.1f} s")
    print(f"ratio SIGKILL / SIGTERM (median): {kill / term:.1f}")
    print(f"ratio SIGKILL / the visibility timeout it cost before: {kill / VISIBILITY_TIMEOUT:.4f}")


if __name__ == "__main__":
    main()
