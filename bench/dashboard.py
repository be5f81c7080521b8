"""How the dashboard and /metrics cost with a large store (not a timed test).

Fills a PostgreSQL database with synthetic rows in a few INSERT ... SELECT
generate_series statements (lifecycles over ten activities with deadlines from
two years ago to eight years ahead, the event log, the erasure audit, sweeps,
dead letters), serves it with `lethe dashboard`, and times the pages over real
HTTP. Usage (PostgreSQL on loopback, trust auth):

    .venv/bin/python bench/dashboard.py --lifecycles 1000000

Prints one line per figure; bench/README.md ("Dashboard") records a run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
LETHE = str(Path(sys.executable).parent / "lethe")
ACTIVITIES = [
    "website.navigation",
    "website.prospects",
    "website.accounts",
    "crm.customers",
    "crm.invoices",
    "ambassadors",
    "newsletter",
    "recruitment",
    "distributors.orders",
    "sales",
]
TYPES = ["order.closed", "contact.made", "visit.recorded", "invoice.issued", "dispute.opened"]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]"


def fill(url: str, lifecycles: int, events: int, erasures: int) -> dict[str, float]:
    timings = {}
    engine = sa.create_engine(url)
    statements = {
        "lifecycles": f"""
            INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state, "then",
                                    updated_at)
            SELECT 'customer:' || g,
                   ({_array(ACTIVITIES)})[1 + g % 10],
                   d - interval '5 years', d,
                   CASE WHEN g % 41 = 0 THEN 'held'
                        WHEN d < now() - interval '30 days' AND g % 20 <> 0 THEN 'erased'
                        ELSE 'active' END,
                   'anonymise', now()
            FROM (SELECT g, now() + ((g::bigint * 7919) % 3650 - 730) * interval '1 day'
                              + (g % 86400) * interval '1 second' AS d
                  FROM generate_series(1, {lifecycles}) AS g) AS s""",
        "events": f"""
            INSERT INTO events (id, type, subject, occurred_at, data, received_at)
            SELECT 'e-' || g, ({_array(TYPES)})[1 + g % 5], 'customer:' || (g % {lifecycles} + 1),
                   now() - (g % 2000) * interval '1 day', '{{}}', now()
            FROM generate_series(1, {events}) AS g""",
        "purge_runs": """
            INSERT INTO purge_runs (schedule, slot_at, now_at, started_at, finished_at, status,
                                    due, held, erased, failed, "rows", parts, parts_done)
            SELECT 'daily', d, d, d, d + (30 + g) * interval '1 second',
                   CASE WHEN g = 3 THEN 'failed' ELSE 'done' END, 7000, 10, 6990, 0, 20000, 1, 1
            FROM (SELECT g, date_trunc('day', now()) - g * interval '1 day' AS d
                  FROM generate_series(1, 30) AS g) AS s""",
        "erasures": f"""
            INSERT INTO erasures (run_id, subject_ref, activity, rule, target, columns, strategy,
                                  outcome, "rows", erased_at)
            SELECT 1 + g % 30, 's-' || md5(g::text), ({_array(ACTIVITIES)})[1 + g % 10],
                   'keep 5 years', 'customers', 'email,name', 'anonymise',
                   CASE WHEN g % 100 = 0 THEN 'nothing_to_erase' ELSE 'erased' END, 1, now()
            FROM generate_series(1, {erasures}) AS g""",
        "dead_letters": """
            INSERT INTO dead_letters (received_at, event_id, reason, payload)
            SELECT now(), 'bad-' || g, 'unknown event type', '{"id": "bad", "type": "x.y"}'
            FROM generate_series(1, 1000) AS g""",
    }
    with engine.begin() as connection:
        for table, statement in statements.items():
            started = time.perf_counter()
            connection.execute(sa.text(statement))
            timings[f"fill {table}"] = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()
    return timings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_get(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return time.perf_counter() - started, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--lifecycles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--erasures", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    name = f"lethe_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = f"{args.server.rsplit('/', 1)[0]}/{name}"
    token = uuid.uuid4().hex
    env = {
        **os.environ,
        "LETHE_DATABASE_URL": url,
        "LETHE_BROKER_URL": "redis://127.0.0.1:6379/0",
        "LETHE_SECRET": "bench-secret-0123456789",
        "LETHE_DASHBOARD_TOKEN": token,
        "LETHE_LOG_FORMAT": "json",
    }
    server = None
    try:
        subprocess.run([LETHE, "db", "upgrade"], env=env, check=True, capture_output=True)
        for what, seconds in fill(url, args.lifecycles, args.events, args.erasures).items():
            print(f"{what}: {seconds:.1f} s")
        port = free_port()
        server = subprocess.Popen(
            [LETHE, "dashboard", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for path in ("/", "/metrics"):
            timed_get(base + path, token)  # warm the connection pool and caches
            samples = [timed_get(base + path, token) for _ in range(args.runs)]
            times = sorted(t for t, _ in samples)
            print(
                f"GET {path}: median {statistics.median(times) * 1000:.0f} ms, "
                f"max {times[-1] * 1000:.0f} ms over {args.runs} runs, "
                f"{samples[0][1] / 1024:.0f} KiB"
            )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if not args.keep:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
