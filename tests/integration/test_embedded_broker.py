"""The embedded default's broker never hands a worker a message still being written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery
from kombu import Connection

from worker.app import celery_config
from worker.embedded_broker import drop_stale_partials
from worker.settings import load_settings

BATCHES = 40

# A reader in its own process, as a worker is, polling the queue folder without
# pause, so that it looks at every instant of every publication.
READER = """
import sys
from celery import Celery
from worker.app import celery_config
from worker.embedded_broker import drop_stale_partials
from worker.settings import load_settings

config = celery_config(load_settings({"LETHE_HOME": sys.argv[1]}))
config["broker_transport_options"]["polling_interval"] = 0
app = Celery("reader")
app.conf.update(config)
sizes, errors = [], []
with app.connection_for_write() as connection:
    queue = connection.SimpleQueue("lethe.events")
    print("ready", flush=True)
    while len(sizes) + len(errors) < int(sys.argv[2]):
        try:
            message = queue.get(timeout=30)
        except queue.Empty:
            break
        except Exception as exc:
            errors.append(type(exc).__name__)
            continue
        sizes.append(len(message.payload))
        message.ack()
print(sizes)
print(errors)
"""


def _connection(home: Path) -> Connection:
    """A connection as Lethe's Celery app opens one on the embedded default."""
    app = Celery("lethe-test")
    app.conf.update(celery_config(load_settings({"LETHE_HOME": str(home)})))
    return app.connection_for_write()


def test_a_worker_polling_while_batches_are_published_gets_every_one_whole(tmp_path: Path):
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path), str(BATCHES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout.readline().strip() == "ready"
    # ~2 MB each: kombu's own transport created the file, then filled it, and a
    # reader that took it in between lost the batch (JSONDecodeError).
    batch = [{"id": f"ev-{i}", "data": "x" * 300} for i in range(6_000)]
    with _connection(tmp_path) as connection:
        queue = connection.SimpleQueue("lethe.events")
        for _ in range(BATCHES):
            queue.put(batch)
    out, _ = reader.communicate(timeout=120)
    sizes, errors = out.strip().splitlines()

    assert errors == "[]", f"the reader took half-written messages: {errors}"
    assert sizes == str([len(batch)] * BATCHES)
    leftovers = list((tmp_path / "broker" / "out").iterdir())
    assert leftovers == [], f"files left in the queue folder: {leftovers}"


def test_worker_start_drops_only_partial_files_old_enough_to_be_abandoned(tmp_path: Path):
    old, fresh = tmp_path / "1_a.lethe.events.msg.part", tmp_path / "2_b.lethe.events.msg.part"
    message = tmp_path / "3_c.lethe.events.msg"
    for path in (old, fresh, message):
        path.write_text("{}")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(message, (two_hours_ago, two_hours_ago))

    assert drop_stale_partials(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, message.name]
