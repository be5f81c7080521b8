"""The coverage task beat sends: thin, it counts each target's shop rows (uncovered, back
after an erasure) and stores the counts, which /metrics reads and the nightly sweep acts on
(worker/sweeps/coverage.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from schedules.beat import COVERAGE_TASK
from worker.app import app
from worker.runtime import runtime
from worker.shop.binding import ShopMismatch, ShopUnavailable
from worker.sweeps.coverage import measure_coverage


@app.task(name=COVERAGE_TASK)
def coverage(schedule: str = "manual") -> dict[str, Any]:
    rt = runtime()
    try:
        rows = measure_coverage(rt.settings, rt.register, store=True)
    except (ShopMismatch, ShopUnavailable, OperationalError, InterfaceError) as exc:
        rt.log.error("ALERT shop coverage not measured", error=type(exc).__name__)
        return {"status": "failed"}
    uncovered = sum(r.uncovered for r in rows)
    back = sum(r.back for r in rows)
    level = rt.log.warning if back or uncovered else rt.log.info
    level("shop coverage measured", schedule=schedule, uncovered=uncovered, back=back)
    return {"status": "done", "uncovered": uncovered, "back": back}
