"""The embedded default's broker: no message handed over half-written, one worker per
home, and what a dead worker lost sent again (and set aside when it keeps dying)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from celery import Celery
from harness import Lethe
from kombu import Connection
from sqlalchemy import select

from worker.app import celery_config
from worker.brokers.embedded import drop_stale_partials
from worker.brokers.spool import spooled
from worker.pipeline.embedded_start import recover
from worker.settings import load_settings
from worker.store.migrate import ensure_schema
from worker.store.schema import DeadLetter
from worker.store.sessions import transaction

BATCHES = 40

# A reader in its own process, as a worker is, polling the queue folder without
# pause, so that it looks at every instant of every publication.
READER = """
import sys
import tempfile
from celery import Celery
from worker.app import celery_config
from worker.brokers.embedded import drop_stale_partials
from worker.settings import load_settings

# kombu's own transport moves a message it takes to the system's temp folder,
# readable by any local user: with none usable, this reader must still get all.
tempfile.tempdir = sys.argv[1] + "/no/such/folder"
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


def test_a_worker_polling_while_batches_are_published_gets_every_one_whole_in_its_home(
    tmp_path: Path,
):
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
    leftovers = [
        *(tmp_path / "broker" / "out").iterdir(),
        *(tmp_path / "broker" / "processed").iterdir(),
    ]
    assert leftovers == [], f"files left in the broker's folders: {leftovers}"


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


def test_a_second_worker_on_the_same_embedded_home_is_refused(embedded: Lethe):
    embedded.start_worker()
    second = embedded.run("worker", check=False, timeout=60)
    assert second.returncode == 1
    assert "another `lethe worker` runs on" in second.stderr
    embedded.kill_workers(signal.SIGKILL)  # the home is free at once (its beat ends with it)
    embedded.start_worker()


def test_a_batch_lost_with_its_worker_every_time_is_set_aside_at_its_5th_delivery(
    tmp_path: Path,
):
    settings = load_settings({"LETHE_HOME": str(tmp_path)})
    ensure_schema(settings)
    app = Celery("lethe-test")
    app.conf.update(celery_config(settings))
    batch = [{"id": "ev-1", "type": "order.closed", "subject": "customer:1"}]
    with spooled(settings, "batch-1", batch):
        pass  # published, then taken by a worker that died before ingesting it
    queue_folder = tmp_path / "broker" / "out"

    sendings = []  # the first delivery was the publication; as Redis counts them
    for _ in range(4):
        sendings.append(recover(app, settings))
        for message in queue_folder.glob("*.msg"):
            message.unlink()  # taken again by a worker that died again
    assert [r["resent"] for r in sendings] == [1, 1, 1, 0]
    assert sendings[-1]["set_aside"] == 1
    with transaction(settings.database_url) as session:
        reasons = session.scalars(select(DeadLetter.reason)).all()
    assert len(reasons) == 1 and "taken 5 times by a worker that died" in reasons[0]
    assert recover(app, settings) == {"resent": 0, "set_aside": 0, "resumed_sweeps": 0}
