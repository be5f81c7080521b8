"""Memory benchmark: is peak resident memory bounded by the batch size, not by the work?

    .venv/bin/python bench/memory.py [--sizes 10000 100000 300000]
                                     [--only ingest recompute sweep forgetting]
                                     [--no-analyze] [--returning]

Each workload runs in a fresh process of its own (spawned, so nothing is inherited)
on PostgreSQL databases of its own, filled beforehand by bulk SQL from this process;
the child reports its own peak resident set (VmHWM) and its time:

- ingest: N events (one `order.closed` or `visit.recorded` each, N/2 customers), made
  as they are sent, through `ingest()` in batches of 500, one transaction each. Its time
  is the batches' alone, with the first and the last tenth of them apart: flat means
  the cost of an event does not grow with the store. Between batches the store's tables
  are analysed each time they have grown by a tenth, as autovacuum's analyze does by
  default (autovacuum_analyze_scale_factor 0.1), outside the time: this server runs
  with autovacuum off, and on tables never analysed PostgreSQL plans each lookup of a
  batch's subjects as a scan of the whole table (bench/README.md, "Memory").
  --no-analyze leaves them so. --returning sends each `order.closed` for a customer
  drawn at random among those seen so far (a returning customer, whose history is read
  back from pages spread over the whole store) instead of the visit's new one;
- recompute: `lethe recompute` (`recompute_lifecycles`, applied) over N customers with
  one event and one stored lifecycle each;
- sweep: a sweep (planned, approved, run in one process, batch 2000) erasing about N
  due lifecycles in a PostgreSQL shop (bench/sweep.py's shop and store);
- forgetting: the nightly pass (`forgetting.forget`, pages of LETHE_SWEEP_BATCH's default)
  over N customers kept only for their invoices: their other lifecycles erased two
  years ago, the invoices' still running (10 years). It deletes nothing; what does it
  cost?

Prints per workload and size the peak RSS, the time, and the ratio of the largest
size's peak to the smallest's (target <= 1.5); for ingest, the time per event of the
last tenth of batches over the first tenth's (flat: near 1).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sweep import counts, database, fill_shop, fill_store  # noqa: E402

NOW = "2026-11-26T00:00:00+00:00"


def _peak_mib() -> float:
    # VmHWM, the peak of this process's own memory: ru_maxrss would also count the
    # parent's RSS at the fork that precedes a spawned child's exec
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(
    work: str, url: str, shop: str | None, n: int, analyze: bool, returning: bool, queue
) -> None:
    import logging

    logging.disable(logging.WARNING)
    from worker.domain.register_file import default_register_path, load_register

    register = load_register(default_register_path())
    before = _peak_mib()
    started = time.perf_counter()
    tenths: tuple[float, float] | None = None
    if work == "ingest":
        took, tenths = _ingest(url, register, n, analyze, returning)
    elif work == "recompute":
        from worker.pipeline.queries import recompute_lifecycles

        recompute_lifecycles(url, register, apply=True)
    elif work == "sweep":
        from sweep import run_lethe_sweep

        run_lethe_sweep(url, shop, 2000, 1)
    else:
        from worker.settings import SweepSettings
        from worker.sweeps import forgetting

        since = datetime.now(UTC) - timedelta(days=365)
        done = forgetting.forget(url, register, since, since, SweepSettings.batch)
        assert done.subjects == 0, done
    if work != "ingest":
        took = time.perf_counter() - started
    queue.put((before, _peak_mib(), took, tenths))


def _ingest(
    url: str, register, n: int, analyze: bool, returning: bool
) -> tuple[float, tuple[float, float]]:
    """The batches' time, and the mean per event of the first tenth of the batches after
    the first and of the last tenth (at least one batch each), in seconds."""
    import random

    import pendulum

    from worker.pipeline.ingest import ingest
    from worker.store.sessions import engine_for, transaction

    now = pendulum.parse(NOW)
    batch: list[dict] = []
    took: list[float] = []
    analysed = 0
    draw = random.Random(7)

    def send() -> None:
        nonlocal analysed
        stored = len(took) * 500
        if analyze and stored > 50 + 1.1 * analysed:
            # autovacuum's threshold for an analyze: 50 rows + 10 % of the table
            with engine_for(url).begin() as connection:
                connection.execute(sa.text("ANALYZE"))
            analysed = stored
        started = time.perf_counter()
        with transaction(url) as session:
            ingest(session, batch, register, now)
        took.append(time.perf_counter() - started)

    for i in range(n):
        kind = "order.closed" if i % 2 else "visit.recorded"
        customer = draw.randrange(i // 2 + 1) if returning and i % 2 else i // 2
        batch.append(
            {
                "id": f"m-{i}",
                "type": kind,
                "subject": f"customer:{customer}",
                "occurred_at": f"2025-{1 + i % 12:02d}-01T10:00:00+00:00",
            }
        )
        if len(batch) == 500:
            send()
            batch = []
    if batch:
        send()
    tenth = max(1, len(took) // 10)
    # the first batch opens the connection and fills SQLAlchemy's statement cache
    first = took[1 : 1 + tenth] or took[:1]
    return sum(took), (sum(first) / (len(first) * 500), sum(took[-tenth:]) / (tenth * 500))


def _fill_recompute(url: str, n: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (id, type, subject, occurred_at, data, received_at) "
                "SELECT 'r-' || i, 'order.closed', 'customer:' || i, timestamptz "
                "'2024-01-01 10:00Z' + i * interval '1 second', '{}', now() "
                "FROM generate_series(1, :n) i"
            ),
            {"n": n},
        )
        connection.execute(
            sa.text(
                'INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state, "then", '
                "updated_at) SELECT 'customer:' || i, 'sales', timestamptz '2023-01-01 10:00Z', "
                "timestamptz '2028-01-01 10:00Z', 'active', 'anonymise', now() "
                "FROM generate_series(1, :n) i"
            ),
            {"n": n},
        )
        connection.execute(sa.text("ANALYZE"))
    engine.dispose()


def _fill_forgetting(url: str, n: int) -> None:
    """N customers kept only for their invoices: sales and crm erased two years ago."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for activity, state, erased in (
            ("sales", "erased", "now() - interval '2 years'"),
            ("crm.customers", "erased", "now() - interval '2 years'"),
            ("crm.invoices", "active", "NULL"),
        ):
            connection.execute(
                sa.text(
                    "INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state, "
                    f"\"then\", updated_at, erased_at) SELECT 'customer:' || i, '{activity}', "
                    "now() - interval '5 years', now() + interval '5 years', "
                    f"'{state}', 'anonymise', now() - interval '2 years', {erased} "
                    "FROM generate_series(1, :n) i"
                ),
                {"n": n},
            )
        connection.execute(
            sa.text(
                "INSERT INTO events (id, type, subject, occurred_at, data, received_at) "
                "SELECT 'f-' || i, 'invoice.issued', 'customer:' || i, now() - interval "
                "'5 years', '{}', now() FROM generate_series(1, :n) i"
            ),
            {"n": n},
        )
        connection.execute(sa.text("ANALYZE"))
    engine.dispose()


def measure(work: str, n: int, analyze: bool = True, returning: bool = False) -> tuple:
    from worker.store.migrate import upgrade

    context = multiprocessing.get_context("spawn")
    with database("mem") as url, database("memshop") as shop:
        if work == "sweep":
            sizes = counts(max(1, round(n / 1.8)))  # about 1.8 lifecycles per subject
            fill_shop(shop, sizes)
            fill_store(url, sizes)
        else:
            upgrade(url)
            if work == "recompute":
                _fill_recompute(url, n)
            elif work == "forgetting":
                _fill_forgetting(url, n)
        queue = context.Queue()
        arguments = (work, url, shop, n, analyze, returning, queue)
        process = context.Process(target=_child, args=arguments)
        process.start()
        found = queue.get()
        process.join()
        assert process.exitcode == 0, process.exitcode
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--only", nargs="+", default=["ingest", "recompute", "sweep", "forgetting"])
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="ingest without the analyses autovacuum would run (this server has it off)",
    )
    parser.add_argument(
        "--returning",
        action="store_true",
        help="ingest: each order for a customer drawn among those seen so far",
    )
    args = parser.parse_args()
    results: dict[str, dict[int, tuple]] = {}
    for work in args.only:
        results[work] = {}
        for n in args.sizes:
            results[work][n] = found = measure(work, n, not args.no_analyze, args.returning)
            tenths = ""
            if found[3] is not None:
                first, last = found[3]
                tenths = (
                    f"; per event, first tenth of batches {first * 1e6:.0f} µs, "
                    f"last tenth {last * 1e6:.0f} µs, last / first {last / first:.2f}"
                )
            print(
                f"{work:<10} {n:>9,}: peak {found[1]:7.1f} MiB (after imports {found[0]:6.1f}), "
                f"{found[2]:7.1f} s{tenths}",
                flush=True,
            )
    print()
    for work, by_size in results.items():
        small, large = min(by_size), max(by_size)
        ratio = by_size[large][1] / by_size[small][1]
        per = [f"{n:,}: {v[2] / n * 1e6:.0f} µs" for n, v in by_size.items()]
        print(
            f"{work:<10} peak at {large:,} / at {small:,}: {ratio:.2f} (target <= 1.5); "
            f"time per item {', '.join(per)}"
        )


if __name__ == "__main__":
    main()
