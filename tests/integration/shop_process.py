"""Shop code run in a process of its own while a test cuts its broker connections, or its
worker's (test_rabbitmq_faults.py, test_redis_faults.py): what it sends and when."""

from __future__ import annotations

import re
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import Lethe, wait_for


def shop_process(lethe: Lethe, code: str, *args: str) -> subprocess.Popen:
    """Shop code in a process of its own that the test talks to through stdin and stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=lethe.env,
        cwd=lethe.home,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def next_line(shop: subprocess.Popen, timeout: float = 30) -> str:
    """The shop's next line; a shop stuck in emit() fails the test instead of hanging it."""
    ready, _, _ = select.select([shop.stdout], [], [], timeout)
    assert ready, f"the shop said nothing for {timeout} s: stuck in emit()?"
    return shop.stdout.readline()


def seconds_in(line: str) -> float:
    found = re.search(r" in ([0-9.]+)s$", line.strip())
    assert found, line
    return float(found.group(1))


# Sends one event about every 5 ms until the stop file appears, and writes each event to
# the sent file once emit() has returned: what the shop may count on being stored.
STREAM = """
import json, os, sys, time
from worker.client import emit
stop, sent = sys.argv[1], open(sys.argv[2], "w")
i = 0
while not os.path.exists(stop):
    event = dict(
        type="order.closed" if i % 3 else "contact.made",
        subject=f"customer:{i % 40}",
        id=f"s-{i}",
        occurred_at=f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+01:00",
        data={} if i % 3 else {"direction": "inbound"},
    )
    emit(**event)
    sent.write(json.dumps(event) + "\\n")
    sent.flush()
    i += 1
    time.sleep(0.005)
"""


# Sends an event, and another each time the test says the broker dropped its connection.
BETWEEN_EMITS = """
import sys, time
from worker.client import emit, emit_many
at = "2026-01-05T10:00:00+01:00"
out = {"direction": "outbound"}
emit("contact.made", subject="customer:1", id="cut-1", occurred_at=at, data=out)
print("sent cut-1", flush=True)
sys.stdin.readline()
start = time.monotonic()
emit("contact.made", subject="customer:2", id="cut-2", occurred_at=at, data=out)
print(f"sent cut-2 in {time.monotonic() - start:.2f}s", flush=True)
sys.stdin.readline()
start = time.monotonic()
report = emit_many([
    dict(type="contact.made", subject="customer:3", id="cut-3", occurred_at=at, data=out),
    dict(type="contact.made", subject="customer:4", id="cut-4", occurred_at=at, data=out),
])
print(f"sent {report.sent} in {time.monotonic() - start:.2f}s", flush=True)
"""


def emits_across_two_cuts(lethe: Lethe, cut: Callable[[subprocess.Popen], None]) -> None:
    """The shop emits, `cut(shop)` drops its connection, it emits, another cut, it sends a
    batch: each send returns at once without an error, and a worker then stores all four
    events. `cut` runs before any worker: the shop's connections are the only ones."""
    shop = shop_process(lethe, BETWEEN_EMITS)
    try:
        assert next_line(shop) == "sent cut-1\n"
        cut(shop)
        shop.stdin.write("go\n")
        shop.stdin.flush()
        # The client finds its pooled connection closed and publishes again on a new one:
        # the shop sees no error, and no event is lost (checked below).
        sent = next_line(shop)
        assert sent.startswith("sent cut-2"), sent + shop.communicate(timeout=60)[0]
        cut(shop)
        shop.stdin.write("go\n")
        shop.stdin.flush()
        sent_many = next_line(shop)
        assert sent_many.startswith("sent 2"), sent_many + shop.communicate(timeout=60)[0]
    finally:
        if shop.poll() is None:
            shop.kill()
    # at once: no connect timeout waited out, no retry delay beyond the first
    assert seconds_in(sent) < 1 and seconds_in(sent_many) < 1, (sent, sent_many)

    lethe.start_worker()
    lethe.wait_stored(4)
    assert lethe.store_count("events") == 4


def stream_across_a_worker_cut(
    lethe: Lethe, worker: subprocess.Popen, folder: Path, cut: Callable[[], None]
) -> None:
    """The shop streams events (STREAM) while `cut()` drops the worker's broker connections:
    the worker, the same process, consumes again, and every event sent is stored once."""
    stop, sent = folder / "stop", folder / "sent.jsonl"
    shop = shop_process(lethe, STREAM, str(stop), str(sent))
    try:
        wait_for(lambda: lethe.store_count("events") >= 20, 60, "the stream flowing", lethe.logs)
        cut()
        # Published once the cut was done (the sent file is written after each emit()
        # returns): stored only if the worker consumes again on a new connection.
        after_the_cut = f"s-{len(sent.read_text().splitlines()) + 1}"
        lethe.wait_event(after_the_cut)
    finally:
        stop.touch()
        output = shop.communicate(timeout=60)[0]
    assert shop.returncode == 0, f"the shop's emit failed, not the worker:\n{output}"
    assert worker.poll() is None, "the worker died instead of reconnecting"

    total = len(sent.read_text().splitlines())
    lethe.wait_stored(total)
    # Messages the worker held unacknowledged when cut off are delivered again: stored
    # once (event ids), and each lifecycle computed from its events once, not twice.
    assert lethe.store_count("events") == total
    assert lethe.store_count("dead_letters") == 0
    assert lethe.deadlines() == lethe.simulate(sent)
