"""The sweep tasks beat sends: thin, they name the slot and call worker.sweeps.run (and
worker.sweeps.erasure for a part that shares a run).

- `lethe.sweep` claims its slot (a second tick for it is a no-op), plans, and
  erases as the run's first part, asking LETHE_SWEEP_PARTS - 1 other workers
  to share the run through `lethe.sweep_part`;
- `lethe.report` writes the daily report to the log (counts only).

A shop database that is down leaves every lifecycle due; the task retries
the same run with a growing delay and the logs carry an alert meanwhile.
"""

from __future__ import annotations

from typing import Any

import pendulum
from sqlalchemy.exc import InterfaceError, OperationalError

from schedules.beat import NIGHTLY_SWEEP, REPORT_TASK, SWEEP_PART_TASK, SWEEP_TASK, slot_for
from worker.app import app
from worker.domain.register_file import RegisterError
from worker.logs import log
from worker.ops.report import daily_report
from worker.runtime import Runtime, runtime
from worker.shop.binding import ShopMismatch, ShopUnavailable, bind_targets, shop_engine
from worker.sweeps.erasure import run_part
from worker.sweeps.run import fail_run, finish_part, note_run, open_run, resumable_run, run_sweep
from worker.sweeps.runs import SweepRefused, ahead_of_the_clock, load_run

SCHEDULES = frozenset({NIGHTLY_SWEEP})

# The run waits at most this long between two attempts at an unreachable shop. The
# waiting task is held unacknowledged by a worker, so this stays below the brokers' limits
# for that (worker/app.py): Redis's visibility timeout, and RabbitMQ's consumer_timeout
# (30 minutes), with ten minutes to spare for the retried sweep to run.
RETRY_BACKOFF_MAX = 1200
MAX_RETRIES = 12


@app.task(name=SWEEP_TASK, bind=True, acks_late=True, max_retries=MAX_RETRIES)
def sweep(
    self: Any, schedule: str, now: str | None = None, run_id: int | None = None
) -> dict[str, Any]:
    """A scheduled sweep. `now` is for a simulated clock (the demo); beat never passes it."""
    rt = _runtime_or_alert(schedule)
    if rt is None:
        return {"status": "failed"}
    settings = rt.settings
    moment = pendulum.parse(now) if now else pendulum.now("UTC")
    # Anyone on the broker can send this task: only beat's schedule names (they are
    # shown on the dashboard) and no clock ahead of the real one (it would erase early).
    if schedule not in SCHEDULES or ahead_of_the_clock(moment):
        rt.log.error(
            "ALERT sweep refused: not a schedule of beat, or a clock ahead of the real one",
            known=schedule in SCHEDULES,
        )
        return {"status": "refused"}
    if run_id is None:
        slot = slot_for(moment, _time_of(schedule, settings), settings.sweep.timezone)
        run_id = open_run(settings, rt.register, now=moment, schedule=schedule, slot_at=slot)
        if run_id is None and _redelivered(self):
            # This very tick was running on a worker that died: carry its run on.
            run_id = resumable_run(settings, schedule, slot)
        if run_id is None:
            rt.log.info("sweep slot already claimed", schedule=schedule, slot=slot.isoformat())
            return {"status": "skipped"}
    try:
        result = run_sweep(settings, rt.register, run_id, spawn_parts=_spawn)
    except SweepRefused as exc:
        rt.log.error("ALERT sweep refused", run=run_id, reason=str(exc))
        return {"status": "refused", "run": run_id}
    except ShopMismatch as exc:
        fail_run(settings, run_id, f"the register's targets do not fit the shop schema: {exc}")
        rt.log.error(
            "sweep refused: targets do not fit the shop", run=run_id, problems=len(exc.problems)
        )
        return {"status": "failed", "run": run_id}
    except (ShopUnavailable, OperationalError, InterfaceError) as exc:
        return _retry_later(self, run_id, exc, schedule=schedule, now=now)
    level = rt.log.warning if result.status == "awaiting_approval" else rt.log.info
    level(
        "sweep " + result.status.replace("_", " "),
        run=run_id,
        due=result.due,
        erased=result.erased,
        failed=result.failed,
        held=result.held,
        note=result.note,
    )
    if result.status == "done":
        _reapply_if_back(rt)
    return {"status": result.status, "run": run_id, "erased": result.erased}


def _reapply_if_back(rt: Runtime) -> None:
    """Rows the coverage task found back after their erasure (a restored backup) are erased
    again by the nightly sweep itself, each with its own `reapplied` audit row."""
    from worker.sweeps.coverage import stored_back
    from worker.sweeps.reapply import reapply

    if not stored_back(rt.settings):
        return
    try:
        done = reapply(rt.settings, rt.register)
    except (ShopMismatch, ShopUnavailable, OperationalError, InterfaceError) as exc:
        rt.log.error("ALERT re-erasure after a restore failed", error=type(exc).__name__)
        return
    rt.log.warning(
        "rows back after their erasure were erased again",
        run=done.run_id,
        subjects=done.subjects,
        rows=done.rows,
    )


@app.task(name=SWEEP_PART_TASK, bind=True, acks_late=True, max_retries=MAX_RETRIES)
def sweep_part(self: Any, run_id: int) -> dict[str, Any]:
    """One more worker sharing a running sweep."""
    rt = _runtime_or_alert(SWEEP_PART_TASK)
    if rt is None:
        return {"status": "failed", "run": run_id}
    settings = rt.settings
    run = load_run(settings, run_id)
    try:
        bound = bind_targets(
            rt.register,
            settings.register_path,
            shop_engine(settings.shop_database_url),
            settings.secret,
        )
        run_part(settings, rt.register, bound, run_id, run.now_at)
    except SweepRefused as exc:
        rt.log.error("ALERT sweep part refused", run=run_id, reason=str(exc))
        return {"status": "refused", "run": run_id}
    except ShopMismatch:
        return {"status": "failed", "run": run_id}
    except (ShopUnavailable, OperationalError, InterfaceError) as exc:
        return _retry_later(self, run_id, exc, run_id_only=True)
    result = finish_part(settings, run_id)
    rt.log.info("sweep part done", run=run_id, status=result.status, erased=result.erased)
    return {"status": result.status, "run": run_id}


@app.task(name=REPORT_TASK, bind=True)
def report(self: Any, schedule: str, now: str | None = None) -> dict[str, Any]:
    rt = runtime()
    moment = pendulum.parse(now) if now else pendulum.now("UTC")
    slot = slot_for(moment, rt.settings.sweep.report_at, rt.settings.sweep.timezone)
    return daily_report(rt.settings, rt.register, schedule, slot, moment, rt.log)


def _runtime_or_alert(what: str) -> Runtime | None:
    """The runtime, or None after an alert when the register broke under a running worker:
    no sweep without the rules, and the log says which line to fix."""
    try:
        return runtime()
    except RegisterError as exc:
        log.error(
            "ALERT sweep not run: the register cannot be loaded",
            schedule=what,
            problem=exc.summary,
            remedy="fix it (`lethe register check`); the next sweep erases what is due",
        )
        return None


def _redelivered(task: Any) -> bool:
    return bool((getattr(task.request, "delivery_info", None) or {}).get("redelivered"))


def _time_of(schedule: str, settings: Any) -> str:
    return settings.sweep.report_at if schedule == "daily-report" else settings.sweep.at


def _spawn(run_id: int, parts: int) -> None:
    for _ in range(parts):
        app.send_task(SWEEP_PART_TASK, args=[run_id])


def _retry_later(self: Any, run_id: int, exc: Exception, run_id_only: bool = False, **kwargs: Any):
    rt = runtime()
    attempt = self.request.retries + 1
    delay = min(RETRY_BACKOFF_MAX, 30 * 2**self.request.retries)
    message = str(exc) if isinstance(exc, ShopUnavailable) else type(exc).__name__
    if attempt > MAX_RETRIES:
        fail_run(rt.settings, run_id, f"gave up after {MAX_RETRIES} attempts: {message}")
        rt.log.error("ALERT sweep failed, shop unreachable", run=run_id, error=type(exc).__name__)
        return {"status": "failed", "run": run_id}
    note_run(rt.settings, run_id, f"attempt {attempt} failed, retrying in {delay}s: {message}")
    rt.log.error(
        "ALERT shop database unreachable: due lifecycles stay due, sweep retried",
        run=run_id,
        error=type(exc).__name__,
        retry_in=delay,
    )
    retry_kwargs = {"run_id": run_id} if run_id_only else {**kwargs, "run_id": run_id}
    raise self.retry(kwargs=retry_kwargs, countdown=delay)
