"""What `lethe worker` does on the embedded default before Celery starts.

The filesystem broker forgets a message once a worker takes it, so what Redis
would redeliver after a crash is recovered here, at the next start:
- one worker per home (a lock the process holds while it runs): a second one
  would re-send the first one's batches in flight and resume its sweep;
- batches taken by a worker that died before ingesting them are sent again
  from the spool (worker/brokers/spool.py), and set aside as dead letters once they
  have been sent MAX_DELIVERIES times, as Redis's redelivery cap does;
- a scheduled sweep whose worker died mid-run is resumed at once, instead of
  leaving what it had not erased for the next night.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from worker.brokers import spool
from worker.brokers.embedded import drop_stale_partials
from worker.brokers.spool import count_sending, pending, release
from worker.pipeline.delivery import MAX_DELIVERIES, set_aside
from worker.settings import Settings
from worker.store.schema import PurgeRun
from worker.store.sessions import transaction

# Held for the life of the process; a POSIX lock is not inherited by the beat
# process Celery forks, so a worker killed with SIGKILL frees its home at once.
_held: list[int] = []


class HomeInUse(RuntimeError):
    """Another `lethe worker` runs on this home."""


def hold_home(settings: Settings) -> None:
    path = settings.home / "worker.lock"
    settings.home.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)
        raise HomeInUse(
            f"another `lethe worker` runs on {settings.home}: the embedded default takes one "
            "worker per LETHE_HOME (stop it first, or use Redis and PostgreSQL for several)"
        ) from None
    _held.append(handle)


def recover(app: Any, settings: Settings) -> dict[str, int]:
    """Send again what the last worker lost; returns what was done, for the log."""
    from schedules.beat import SWEEP_TASK
    from worker.app import INGEST_TASK

    options = app.conf.broker_transport_options
    folder = Path(options["data_folder_in"])
    drop_stale_partials(folder)
    drop_stale_partials(spool.folder(settings))
    # Taken by a worker that died before reading them: their batches are in the spool.
    for taken in Path(options["processed_folder"]).glob("*.msg"):
        taken.unlink(missing_ok=True)
    queued = _queued_task_ids(folder)
    resent = set_aside_batches = 0
    for task_id, messages in pending(settings):
        # Still waiting in the broker's folder (emitted while no worker ran):
        # sending it again would deliver it twice.
        if task_id in queued:
            continue
        if count_sending(settings, task_id) >= MAX_DELIVERIES:
            with transaction(settings.database_url) as session:
                set_aside(
                    session,
                    messages,
                    f"taken {MAX_DELIVERIES} times by a worker that died each time: set aside "
                    "so the queue goes on; replay with `lethe dead-letters --replay`",
                )
            release(settings, task_id)
            set_aside_batches += 1
            continue
        app.send_task(INGEST_TASK, args=[messages], task_id=task_id)
        resent += 1
    resumed = 0
    for run_id, schedule in _interrupted_runs(settings):
        app.send_task(SWEEP_TASK, kwargs={"schedule": schedule, "run_id": run_id})
        resumed += 1
    return {"resent": resent, "set_aside": set_aside_batches, "resumed_sweeps": resumed}


def _interrupted_runs(settings: Settings) -> list[tuple[int, str]]:
    # Only beat's runs: a `lethe purge` runs in its own process, which may still be
    # alive, and is started again by hand.
    with transaction(settings.database_url) as session:
        return [
            (run_id, schedule)
            for run_id, schedule in session.execute(
                select(PurgeRun.id, PurgeRun.schedule).where(
                    PurgeRun.status == "running", PurgeRun.schedule != "manual"
                )
            )
        ]


def _queued_task_ids(folder: Path) -> set[str]:
    """Task ids of the messages waiting in the embedded broker's folder (kombu's filesystem
    transport keeps one JSON file per message; Celery puts the task id in its headers)."""
    ids: set[str] = set()
    for path in folder.glob("*.msg"):
        try:
            headers = json.loads(path.read_bytes()).get("headers") or {}
        except (OSError, ValueError, AttributeError):
            # damaged: resend the spooled copy, twice is better than never
            continue
        if isinstance(headers.get("id"), str):
            ids.add(headers["id"])
    return ids
