"""The ingest tasks: thin, they parse the message and call worker.ingest.

Two entry points, one handler:
- `lethe.ingest` takes a batch (from `emit_many` / `emit --file`) per message;
- `lethe.ingest_one` takes one event per message (from `emit`); the worker
  gathers such messages (celery-batches) and ingests them in one transaction,
  which is what makes one-event-at-a-time sending cheap. Messages are
  acknowledged only after that transaction.
"""

from __future__ import annotations

import json
import os
from typing import Any

import structlog
from celery_batches import Batches
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.app import INGEST_ONE_TASK, INGEST_TASK, NOOP_TASK, app
from worker.delivery import set_aside, too_many_deliveries
from worker.ingest import ingest
from worker.runtime import runtime
from worker.spool import release
from worker.store import now_utc, transaction

# Longest wait between two retries while the database is down; stays below the
# broker's visibility timeout (worker/app.py) so a waiting retry is not redelivered.
RETRY_BACKOFF_MAX = 600
STORE_ERRORS = (OperationalError, InterfaceError)


def _ingest(events: list[Any], task_ids: list[str], retries: int = 0) -> dict[str, int]:
    """One transaction for the whole batch; store errors propagate (the caller retries)."""
    rt = runtime()
    try:
        with transaction(rt.settings.database_url) as session:
            report = ingest(session, events, rt.register, now_utc())
    except STORE_ERRORS as exc:
        rt.log.warning(
            "store unavailable, will retry",
            error=type(exc).__name__,
            retries=retries,
            events=len(events),
        )
        raise
    except Exception as exc:
        # A failed task is acknowledged and gone: keep its events as dead letters.
        # Only the error's type is told: its text may quote the events' values.
        with transaction(rt.settings.database_url) as session:
            set_aside(
                session,
                events,
                f"internal error {type(exc).__name__} while ingesting this batch; "
                "replay with `lethe dead-letters --replay` once fixed",
            )
        rt.log.error(
            "batch set aside after an internal error", error=type(exc).__name__, events=len(events)
        )
        outcome = {"dead_lettered": len(events)}
    else:
        rt.log.info(
            "events ingested",
            stored=report.stored,
            duplicates=report.duplicates,
            refused=report.refused,
            lifecycles=report.lifecycles,
            retries=retries,
        )
        outcome = vars(report)
    for task_id in task_ids:
        release(rt.settings, task_id)
    return outcome


def _capped(request: Any, events: list[Any]) -> bool:
    rt = runtime()
    if not too_many_deliveries(rt.settings.database_url, request, events):
        return False
    release(rt.settings, request.id)
    rt.log.error("batch set aside after repeated worker losses", events=len(events))
    return True


@app.task(
    name=INGEST_TASK,
    bind=True,
    autoretry_for=STORE_ERRORS,
    retry_backoff=2,
    retry_backoff_max=RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=None,
)
def ingest_events(self: Any, events: list[Any]) -> dict[str, int]:
    """Ingest a batch of events."""
    structlog.contextvars.bind_contextvars(task_id=self.request.id)
    try:
        if _capped(self.request, events):
            return {"dead_lettered": len(events)}
        return _ingest(events, [self.request.id], self.request.retries)
    finally:
        structlog.contextvars.unbind_contextvars("task_id")


@app.task(
    name=INGEST_ONE_TASK,
    base=Batches,
    flush_every=int(os.environ.get("LETHE_GATHER", 200)),
    flush_interval=0.05,
)
def ingest_gathered(requests: list[Any]) -> None:
    """Ingest the single-event messages the worker gathered, in one transaction."""
    events: list[Any] = []
    task_ids: list[str] = []
    for request in requests:
        if not _capped(request, request.args[0]):
            events.extend(request.args[0])
            task_ids.append(request.id)
    if not events:
        return
    structlog.contextvars.bind_contextvars(task_id=task_ids[0], gathered=len(task_ids))
    try:
        _ingest(events, task_ids)
    except STORE_ERRORS:
        # celery-batches acknowledges the messages whatever happens, so a store
        # failure hands the events to `lethe.ingest`, which retries with backoff.
        try:
            app.send_task(INGEST_TASK, args=[events], countdown=2)
        except Exception:
            # Neither store nor broker: die without acknowledging, so the broker
            # delivers these messages again (task_reject_on_worker_lost).
            os._exit(75)
    finally:
        structlog.contextvars.unbind_contextvars("task_id", "gathered")


@app.task(name=NOOP_TASK, bind=True)
def noop(self: Any, payload: Any) -> None:
    """Does nothing: the baseline the ingest benchmark compares against."""
    json.dumps(payload)
