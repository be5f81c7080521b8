"""How long `lethe demo` takes on the embedded default (not a timed test).

The issue asks for under a minute. The demo runs as the README runs it (its
own fresh home, no settings), first alone, then with `--beside` copies of
itself running at once, which is what a busy CI machine looks like. Prints the
seconds of each run and its ratio to the 60 s budget. Usage:

    .venv/bin/python bench/demo.py [--runs 3] [--beside 3] [--people 400]

bench/README.md ("Demo") records a run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LETHE = str(Path(sys.executable).parent / "lethe")
BUDGET = 60.0


def one_demo(people: int) -> float:
    with tempfile.TemporaryDirectory(prefix="lethe-bench-demo-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
        env["LETHE_HOME"] = home
        started = time.monotonic()
        result = subprocess.run(
            [LETHE, "demo", "--people", str(people)], env=env, capture_output=True, text=True
        )
        took = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"the demo failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return took


def report(label: str, seconds: list[float]) -> None:
    median = statistics.median(seconds)
    shown = ", ".join(f"{s:.1f}" for s in seconds)
    print(f"{label}: {shown} s; median {median:.1f} s = {median / BUDGET:.2f} of the 60 s budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="demos run one after the other")
    parser.add_argument("--beside", type=int, default=3, help="demos run at once, then")
    parser.add_argument("--people", type=int, default=400, help="the demo's default: 400")
    args = parser.parse_args()

    print(f"{os.cpu_count()} cores; demo with {args.people} people", flush=True)
    report("alone", [one_demo(args.people) for _ in range(args.runs)])
    with ThreadPoolExecutor(args.beside) as pool:
        together = list(pool.map(one_demo, [args.people] * args.beside))
    report(f"{args.beside} at once", together)


if __name__ == "__main__":
    main()
