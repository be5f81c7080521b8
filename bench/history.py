"""History benchmark: does an event cost more when its subject already has many?

    .venv/bin/python bench/history.py [--store postgresql|sqlite|both] [--rounds 15]

In process (`ingest()` in its own transaction, as the worker calls it), on a store of
its own (a PostgreSQL database, or an SQLite file), migrated as `lethe db upgrade` does:

1. one subject: a `visit.recorded` for a visitor who already has 10, 1,000, 10,000 or
   50,000 visits in the log, one event per transaction; the four visitors are timed in
   turn, round after round, so the machine's load falls on all alike; median per event;
2. a batch: 500 new events, one for each of 500 visitors who have 1 past event each,
   against 500 who have 500 each (250,000 events); medians over the rounds.

The past events are written by bulk SQL as a store from before the event summary
would hold them (migration 0010's stale marker per subject); one untimed event per
subject first brings its lifecycles and summary up to date (the first event after the
upgrade reads the whole log once). Prints the medians and the ratios: target <= 1.5
for 50,000 against 10 past events, and for the batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pendulum
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweep import database  # noqa: E402  (bench/sweep.py: a database of our own)

LEVELS = [10, 1_000, 10_000, 50_000]
BATCH = 500
BATCH_PAST = [1, 500]
NOW = pendulum.parse("2026-11-26T00:00:00+00:00")


@contextmanager
def store(kind: str) -> Iterator[str]:
    if kind == "postgresql":
        with database("history") as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="lethe-history-") as folder:
        yield f"sqlite:///{folder}/store.sqlite3"


def fill(url: str, prefix: str, subjects: int, past: int) -> None:
    """`past` visits for each of `subjects` visitors, ten minutes apart from 2019 on."""
    engine = sa.create_engine(url)
    postgres = url.startswith("postgresql")
    with engine.begin() as connection:
        if postgres:
            connection.execute(
                sa.text(
                    "INSERT INTO events (id, type, subject, occurred_at, data, received_at) "
                    "SELECT :prefix || s || '-' || g, 'visit.recorded', 'visitor:' || :prefix "
                    "|| s, timestamptz '2019-01-01 00:00Z' + g * interval '10 minutes', '{}', "
                    "now() FROM generate_series(1, :subjects) s, generate_series(1, :past) g"
                ),
                {"prefix": prefix, "subjects": subjects, "past": past},
            )
        else:
            connection.execute(
                sa.text(
                    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g "
                    "WHERE n < :past), s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
                    "WHERE n < :subjects) "
                    "INSERT INTO events (id, type, subject, occurred_at, data, received_at) "
                    "SELECT :prefix || s.n || '-' || g.n, 'visit.recorded', 'visitor:' || "
                    ":prefix || s.n, strftime('%Y-%m-%d %H:%M:%S', '2019-01-01', "
                    "'+' || (g.n * 10) || ' minutes') || '.000000', '{}', "
                    "'2026-11-01 00:00:00.000000' FROM s, g"
                ),
                {"prefix": prefix, "subjects": subjects, "past": past},
            )
        if sa.inspect(connection).has_table("event_summary"):
            # as migration 0010 leaves a store filled before it: one stale marker each
            connection.execute(
                sa.text(
                    "INSERT INTO event_summary (subject, type, variant, event_id, "
                    "occurred_at, spec) SELECT subject, '', '', MAX(id), MAX(occurred_at), '' "
                    "FROM events WHERE subject LIKE 'visitor:' || :prefix || '%' "
                    "GROUP BY subject"
                ),
                {"prefix": prefix},
            )
    engine.dispose()


_serial = 0


def visit(subject: str) -> dict:
    global _serial
    _serial += 1
    moment = pendulum.datetime(2026, 1, 1).add(minutes=_serial)
    return {
        "id": f"new-{_serial}",
        "type": "visit.recorded",
        "subject": subject,
        "occurred_at": moment.isoformat(),
    }


def timed(url: str, register, events: list[dict]) -> float:
    from worker.pipeline.ingest import ingest
    from worker.store.sessions import transaction

    started = time.perf_counter()
    with transaction(url) as session:
        report = ingest(session, events, register, NOW)
    elapsed = time.perf_counter() - started
    assert report.stored == len(events), report
    return elapsed


def run(kind: str, rounds: int) -> dict[str, float]:
    from worker.domain.register_file import default_register_path, load_register
    from worker.store.migrate import upgrade

    register = load_register(default_register_path())
    found: dict[str, float] = {}
    with store(kind) as url:
        upgrade(url)
        started = time.perf_counter()
        for level in LEVELS:
            fill(url, f"p{level}-", 1, level)
        for past in BATCH_PAST:
            fill(url, f"b{past}-", BATCH, past)
        print(f"{kind}: filled in {time.perf_counter() - started:.1f} s", flush=True)
        singles = {level: f"visitor:p{level}-1" for level in LEVELS}
        crowds = {p: [f"visitor:b{p}-{s}" for s in range(1, BATCH + 1)] for p in BATCH_PAST}
        for subject in singles.values():  # untimed: lifecycles and summary made
            timed(url, register, [visit(subject)])
        for subjects in crowds.values():
            timed(url, register, [visit(s) for s in subjects])
        single_times: dict[int, list[float]] = {level: [] for level in LEVELS}
        batch_times: dict[int, list[float]] = {p: [] for p in BATCH_PAST}
        for n in range(rounds):
            for level in LEVELS:
                single_times[level].append(timed(url, register, [visit(singles[level])]))
            if n % 3 == 0:
                for past in BATCH_PAST:
                    events = [visit(s) for s in crowds[past]]
                    batch_times[past].append(timed(url, register, events))
        for level in LEVELS:
            found[f"one event, {level:,} past"] = statistics.median(single_times[level])
        for past in BATCH_PAST:
            found[f"500 subjects, {past} past each"] = statistics.median(batch_times[past])
    return found


def report(kind: str, found: dict[str, float]) -> None:
    print(f"\n{kind}")
    for label, seconds in found.items():
        print(f"  {label:<32} {seconds * 1000:9.1f} ms (median)")
    one = found[f"one event, {LEVELS[-1]:,} past"] / found[f"one event, {LEVELS[0]:,} past"]
    batch = found["500 subjects, 500 past each"] / found["500 subjects, 1 past each"]
    print(f"  ratio one event, {LEVELS[-1]:,} vs {LEVELS[0]} past: {one:.2f} (target <= 1.5)")
    print(f"  ratio 500-subject batch, 500 vs 1 past: {batch:.2f} (target <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    kinds = ["postgresql", "sqlite"] if args.store == "both" else [args.store]
    results = {kind: run(kind, args.rounds) for kind in kinds}
    for kind, found in results.items():
        report(kind, found)


if __name__ == "__main__":
    main()
