"""A worker that dies on Redis (SIGKILL: an OOM kill, a lost machine, a deploy that does not
wait) costs seconds, not the visibility timeout: the messages it took and never acknowledged
go back to their queue once its heartbeat has stopped (worker/brokers/consumers.py), while
a live worker keeps its long task whatever the visibility timeout.

Real worker processes, each in a process group of its own (a "machine"), the shared Redis
under a key prefix of the test's own, and a real PostgreSQL store.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa
from harness import Lethe, wait_for
from sweeping import (
    EARLY,
    NOW,
    lock_waits,
    make_shop,
    seed_store,
)
from test_dashboard import get, serve_dashboard, stop

# Sends the events of a file in batches of 500 (one message each), a pause between two, so
# that the workers are killed while the stream goes on.
STREAM = """
import json, sys, time
from worker.client import emit_many
events = [json.loads(line) for line in open(sys.argv[1])]
pause = float(sys.argv[2])
for start in range(0, len(events), 500):
    report = emit_many(events[start:start + 500])
    assert report.sent == len(events[start:start + 500]), report
    time.sleep(pause)
"""


def _events(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for i in range(count):
            event = {
                "type": "order.closed" if i % 3 else "contact.made",
                "subject": f"customer:{i % 997}",
                "id": f"e-{i}",
                "occurred_at": f"20{20 + i % 6}-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+01:00",
                "data": {} if i % 3 else {"direction": ("inbound", "outbound")[i % 2]},
            }
            out.write(json.dumps(event) + "\n")
    return path


def _stream(lethe: Lethe, events: Path, pause: float) -> subprocess.Popen:
    command = [sys.executable, "-c", STREAM, str(events), str(pause)]
    return subprocess.Popen(command, env=lethe.env, cwd=lethe.home)


def _given_back(logs: list[Path]) -> int:
    """Messages the workers say they gave back for dead ones."""
    found = re.findall(
        r'"messages": (\d+)[^\n]*gave back the messages of workers',
        "".join(p.read_text() for p in logs),
    )
    return sum(int(n) for n in found)


def _wait_holding(lethe: Lethe, worker: subprocess.Popen) -> None:
    """Until the worker holds deliveries it has not acknowledged: its held set
    (worker/brokers/consumers.py, `lethe.held.<pid>-<uuid>`) is not empty."""
    client = redis.Redis.from_url(lethe.env["LETHE_BROKER_URL"])
    pattern = f"{lethe.env['LETHE_QUEUE_PREFIX']}:lethe.held.{worker.pid}-*"
    try:
        wait_for(
            lambda: any(client.scard(key) for key in client.scan_iter(match=pattern)),
            60,
            "the worker to take messages",
            lethe.logs,
            every=0.01,  # a message is held a fraction of a second
        )
    finally:
        client.close()


def test_a_worker_killed_four_times_mid_stream_loses_nothing_and_waits_no_hour(
    distributed: Lethe, tmp_path: Path
):
    lethe = distributed
    del lethe.env["LETHE_VISIBILITY_TIMEOUT"]  # an hour: nothing may come back by it
    events = _events(tmp_path / "events.jsonl", 20_000)
    expected = lethe.simulate(events)
    worker = lethe.start_worker()
    shop = _stream(lethe, events, pause=0.5)
    for _ in range(4):
        # Killed while it holds messages: a fixed sleep killed, on a busy machine, workers
        # that had taken none yet (CI: nothing to give back).
        _wait_holding(lethe, worker)
        lethe.kill_workers()  # SIGKILL to the worker's whole group
        worker = lethe.start_worker()
    restarted = time.monotonic()
    assert shop.wait(timeout=120) == 0
    wait_for(
        lambda: lethe.store_count("events") == 20_000 and lethe.deadlines() == expected,
        90 - (time.monotonic() - restarted),
        "every lifecycle within 90 s of the last restart",
        lethe.logs[-1:],
    )
    assert lethe.store_count("events") == 20_000 and lethe.store_count("dead_letters") == 0
    assert _given_back(lethe.logs) > 0, "the kills should have left messages to give back"


def test_the_survivor_of_two_machines_takes_back_the_dead_ones_messages(
    distributed: Lethe, tmp_path: Path
):
    lethe = distributed
    del lethe.env["LETHE_VISIBILITY_TIMEOUT"]
    events = _events(tmp_path / "events.jsonl", 6_000)
    doomed = lethe.start_worker()
    survivor = lethe.start_worker()  # in a process group ("machine") of its own
    assert _stream(lethe, events, pause=0).wait(timeout=120) == 0
    # BRPOP shares the messages out between the two; each takes several (prefetch)
    _wait_holding(lethe, doomed)
    lethe.workers.remove(doomed)
    os.killpg(doomed.pid, signal.SIGKILL)  # its "machine": the worker and its pool
    doomed.wait(timeout=30)
    killed = time.monotonic()
    lethe.wait_stored(6_000, timeout=60)
    assert time.monotonic() - killed < 60
    assert survivor.poll() is None and lethe.store_count("events") == 6_000
    assert _given_back(lethe.logs[1:]) > 0  # the survivor's own log


def test_status_names_the_messages_of_a_dead_worker_until_one_starts(
    distributed: Lethe, tmp_path: Path
):
    lethe = distributed
    del lethe.env["LETHE_VISIBILITY_TIMEOUT"]
    events = _events(tmp_path / "events.jsonl", 6_000)
    worker = lethe.start_worker()
    assert _stream(lethe, events, pause=0).wait(timeout=120) == 0
    _wait_holding(lethe, worker)
    lethe.kill_workers()
    assert lethe.store_count("events") < 6_000, "the kill should land mid-stream"

    named = re.compile(r"orphaned\s+ATTENTION\s+(\d+) message\(s\) held by a stopped worker")
    said: list[str] = []

    def status_names_them() -> bool:
        said[:] = [lethe.run("status", check=False).stdout]
        return named.search(said[0]) is not None

    # the heartbeat stops being fresh 20 s after the last beat
    wait_for(status_names_them, 40, "`lethe status` to name the orphaned messages")
    line = next(x for x in said[0].splitlines() if named.search(x))
    assert re.search(r"for \d+ s", line) and int(named.search(line)[1]) > 0, line
    lethe.env["LETHE_DASHBOARD_TOKEN"] = token = f"token-{uuid.uuid4().hex}"
    dashboard, base = serve_dashboard(lethe)
    try:
        assert "held by a stopped worker" in get(f"{base}/", token)[1]
        metrics = get(f"{base}/metrics", token)[1]
    finally:
        stop(dashboard)
    held = re.search(r"^lethe_broker_orphaned_messages (\S+)$", metrics, re.M)
    waited = re.search(r"^lethe_broker_orphaned_seconds (\S+)$", metrics, re.M)
    assert held and float(held[1]) > 0 and waited and float(waited[1]) >= 20, metrics
    lethe.start_worker()  # at start it gives them back
    lethe.wait_stored(6_000, timeout=60)
    assert re.search(r"orphaned\s+OK", lethe.run("status", check=False).stdout)


def test_a_live_workers_long_sweep_stays_its_own_past_the_visibility_timeout(
    distributed: Lethe, request
):
    lethe = distributed
    # Short, so that without the heartbeat kombu would give the sweep to the second worker
    # within seconds; the beat (every 5 s) keeps it.
    lethe.env.update({"LETHE_VISIBILITY_TIMEOUT": "12", "LETHE_SWEEP_PARTS": "1"})
    shop = make_shop(lethe, request, people=40)
    seed_store(lethe, shop.data.events)
    assert shop.purge_approved(EARLY)["status"] == "done"
    engine = shop.engine()
    blocker = engine.connect()
    blocking = blocker.begin()
    # the sweep runs for as long as the shop's customers table is locked
    blocker.execute(sa.text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
    try:
        lethe.start_worker()
        lethe.python(
            "from worker.app import app\n"
            f"app.send_task('lethe.sweep', kwargs={{'schedule': 'nightly-sweep', 'now': {NOW!r}}})"
        )
        wait_for(lambda: lock_waits(engine) > 0, 60, "the sweep to wait on the shop", lethe.logs)
        lethe.start_worker()
        # twice the visibility timeout, and more than a dead consumer's 20 s
        time.sleep(25)
        assert lock_waits(engine) > 0, "the sweep should still be running"
    finally:
        blocking.rollback()
        blocker.close()
        engine.dispose()

    def runs() -> list[tuple]:
        return shop.store("select status from purge_runs where schedule = 'nightly-sweep'")

    # the sweep went its way once the shop was free (this one stops for a DPO's approval)
    wait_for(lambda: runs() not in ([], [("running",)]), 60, "the sweep's end", lethe.logs)
    assert len(runs()) == 1, runs()
    sweeps = r"lethe\.sweep\[[^\]]+\] received"
    received = [len(re.findall(sweeps, p.read_text())) for p in lethe.logs]
    assert received == [1, 0], received
