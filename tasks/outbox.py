"""The outbox relay task beat sends every LETHE_OUTBOX_EVERY seconds: thin, it calls
worker.pipeline.outbox, which does the work `lethe outbox relay` does."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from schedules.beat import OUTBOX_TASK
from worker.app import app
from worker.client import BrokerUnavailable, EventInvalid
from worker.pipeline.outbox import relay
from worker.runtime import runtime

# Batches per run: a long backlog is relayed by the next ticks, so one run never holds
# a worker (the embedded default's only one) much longer than a tick.
MOST_BATCHES = 20


@app.task(name=OUTBOX_TASK, acks_late=False, ignore_result=True)
def relay_outbox() -> dict[str, int]:
    """Relay what waits in the shop's outbox; what fails stays there for the next tick."""
    rt = runtime()
    try:
        report = relay(rt.settings, most_batches=MOST_BATCHES)
    except BrokerUnavailable:
        rt.log.warning("outbox relay: broker unavailable, rows kept for the next run")
        return {"sent": 0, "refused": 0}
    except EventInvalid as exc:  # the register cannot be loaded: every row waits
        rt.log.error("outbox relay: the register cannot be used", error=type(exc).__name__)
        return {"sent": 0, "refused": 0}
    except SQLAlchemyError as exc:
        # the type only: a driver's message may quote the rows' values
        rt.log.warning("outbox relay: database unavailable", error=type(exc).__name__)
        return {"sent": 0, "refused": 0}
    if report.batches:
        rt.log.info("outbox relayed", sent=report.sent, refused=report.refused)
    return {"sent": report.sent, "refused": report.refused}
