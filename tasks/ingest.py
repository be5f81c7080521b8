"""The ingest tasks: thin, they parse the message and call worker.pipeline.ingest.

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
from worker.brokers.spool import release
from worker.domain.register_file import RegisterError
from worker.logs import log
from worker.pipeline.delivery import set_aside, too_many_deliveries
from worker.pipeline.ingest import ingest
from worker.runtime import Runtime, runtime
from worker.settings import current_settings, whole_number
from worker.store.sessions import now_utc, transaction

# Longest wait between two retries while the database is down; stays below Redis's
# visibility timeout and RabbitMQ's consumer_timeout (worker/app.py), as a worker holds
# the waiting retry unacknowledged, so that it is not delivered again meanwhile.
RETRY_BACKOFF_MAX = 600
STORE_ERRORS = (OperationalError, InterfaceError)


def _ingest(events: list[Any], task_ids: list[str], retries: int = 0) -> dict[str, int]:
    """One transaction for the whole batch; store errors propagate (the caller retries)."""
    rt = _loaded_runtime(events, task_ids)
    if rt is None:
        return {"dead_lettered": len(events)}
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


def _loaded_runtime(events: list[Any], task_ids: list[str]) -> Runtime | None:
    """The runtime; None once the batch went to the dead letters because the register is broken.

    `lethe worker` refuses to start on a broken register, but the file can break
    under a running worker: a prefork child started later, or a first task, loads
    it then. The batch goes to the dead letters rather than a Celery retry: a
    broken register waits for a human, and dead letters are what `lethe status`,
    the dashboard and the `lethe_dead_letters` alert show, while a retrying
    message waits unseen (held unacknowledged by a worker) and its countdown
    must stay below Redis' visibility timeout or it is delivered twice.
    `lethe dead-letters --replay` refuses a broken register, so the events come
    back only through the fixed one.
    """
    try:
        return runtime()
    except RegisterError as exc:
        reason = (
            f"register unusable: {exc.summary}; fix it (`lethe register check` lists "
            "every problem), then replay with `lethe dead-letters --replay`"
        )
    # runtime() configured the logs and settings before it failed on the register
    settings = current_settings()
    with transaction(settings.database_url) as session:
        set_aside(session, events, reason)
    for task_id in task_ids:
        release(settings, task_id)
    log.error("batch set aside: the register cannot be loaded", reason=reason, events=len(events))
    return None


def _as_batch(args: tuple[Any, ...]) -> list[Any]:
    """The events of a message. A producer of its own may send one event, or a JSON
    text, where a list belongs: each argument is then one event, checked (and
    refused) as such, instead of a text taken apart character by character."""
    if len(args) == 1 and isinstance(args[0], list):
        return args[0]
    log.warning("a message whose argument is not a list of events", arguments=len(args))
    return list(args)


def _capped(request: Any, events: list[Any]) -> bool:
    settings = current_settings()
    if not too_many_deliveries(settings.database_url, request, events):
        return False
    release(settings, request.id)
    log.error("batch set aside after repeated worker losses", events=len(events))
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
def ingest_events(self: Any, *args: Any, **kwargs: Any) -> dict[str, int]:
    """Ingest a batch of events (one argument: the list the client sends)."""
    structlog.contextvars.bind_contextvars(task_id=self.request.id)
    # keyword arguments from a producer of its own: their values are events too
    events = _as_batch(args + tuple(kwargs.values()))
    try:
        if _capped(self.request, events):
            return {"dead_lettered": len(events)}
        return _ingest(events, [self.request.id], self.request.retries)
    finally:
        structlog.contextvars.unbind_contextvars("task_id")


class Gathering(Batches):
    """celery-batches' Batches, whose flush timer is started again when the worker reconnects.

    On a lost broker connection Celery restarts its consumer, clears the timer that
    held Batches' periodic flush, and builds each task's strategy anew. Batches still
    believed its timer ran (`_tref` set), so it flushed only at every `flush_every`-th
    message; with fewer prefetched than that the worker held them unacknowledged and
    ingested nothing more until restarted (celery-batches issue 107, fixed upstream
    after 0.11). Forgetting the old timer here makes the next message start a new one.
    """

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:  # noqa: N802 (Celery's name)
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None
        return super().Strategy(task, app, consumer)


@app.task(
    name=INGEST_ONE_TASK,
    base=Gathering,
    flush_every=whole_number("LETHE_GATHER", 200),
    flush_interval=0.05,
)
def ingest_gathered(requests: list[Any]) -> None:
    """Ingest the single-event messages the worker gathered, in one transaction."""
    events: list[Any] = []
    task_ids: list[str] = []
    for request in requests:
        batch = _as_batch(request.args)
        if not _capped(request, batch):
            events.extend(batch)
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
