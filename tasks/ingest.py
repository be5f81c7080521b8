"""The ingest task: thin, it parses the message and calls worker.ingest."""

from __future__ import annotations

import json
from typing import Any

import structlog
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.app import INGEST_TASK, app
from worker.delivery import set_aside, too_many_deliveries
from worker.ingest import ingest
from worker.runtime import runtime
from worker.spool import release
from worker.store import now_utc, transaction

# Longest wait between two retries while the database is down; stays below the
# broker's visibility timeout (worker/app.py) so a waiting retry is not redelivered.
RETRY_BACKOFF_MAX = 600


@app.task(
    name=INGEST_TASK,
    bind=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    retry_backoff_max=RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=None,
)
def ingest_events(self: Any, events: list[Any]) -> dict[str, int]:
    """Ingest a batch of events (one from `emit`, many from `emit_many` / `emit --file`)."""
    rt = runtime()
    structlog.contextvars.bind_contextvars(task_id=self.request.id)
    try:
        if too_many_deliveries(rt.settings.database_url, self.request, events):
            release(rt.settings, self.request.id)
            rt.log.error("batch set aside after repeated worker losses", events=len(events))
            return {"dead_lettered": len(events)}
        with transaction(rt.settings.database_url) as session:
            report = ingest(session, events, rt.register, now_utc())
        release(rt.settings, self.request.id)
        rt.log.info(
            "events ingested",
            stored=report.stored,
            duplicates=report.duplicates,
            refused=report.refused,
            lifecycles=report.lifecycles,
            retries=self.request.retries,
        )
        return vars(report)
    except (OperationalError, InterfaceError) as exc:
        rt.log.warning(
            "store unavailable, will retry",
            error=type(exc).__name__,
            retries=self.request.retries,
            events=len(events),
        )
        raise
    except Exception as exc:
        # A failed task is acknowledged and gone: keep its events as dead letters.
        # Only the error's type is told: its text may quote the events' values.
        reason = (
            f"internal error {type(exc).__name__} while ingesting this batch; "
            "replay with `lethe dead-letters --replay` once fixed"
        )
        with transaction(rt.settings.database_url) as session:
            set_aside(session, events, reason)
        release(rt.settings, self.request.id)
        rt.log.error(
            "batch set aside after an internal error", error=type(exc).__name__, events=len(events)
        )
        return {"dead_lettered": len(events)}
    finally:
        structlog.contextvars.unbind_contextvars("task_id")


@app.task(name="lethe.noop", bind=True)
def noop(self: Any, payload: Any) -> None:
    """Does nothing: the baseline the ingest benchmark compares against."""
    json.dumps(payload)
