"""The beat schedule, built from settings: the nightly sweep, the daily report, and the
outbox relay (every LETHE_OUTBOX_EVERY seconds, while the shop database has the outbox).

Each tick names its slot (the scheduled local time it stands for); the run
claims that slot under a unique constraint, so a second beat, a clock jump or
a daylight-saving night cannot make two sweeps of one slot.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from celery.schedules import crontab, schedstate
from celery.schedules import schedule as every_schedule

SWEEP_TASK = "lethe.sweep"
SWEEP_PART_TASK = "lethe.sweep_part"
REPORT_TASK = "lethe.report"
COVERAGE_TASK = "lethe.coverage"
NIGHTLY_SWEEP = "nightly-sweep"
DAILY_REPORT = "daily-report"
OUTBOX_TASK = "lethe.outbox_relay"
OUTBOX_RELAY = "outbox-relay"
# While the shop database has no `lethe_outbox`, beat looks for it again this often:
# `lethe outbox install` turns the relay on within this delay, without a restart.
OUTBOX_LOOK_AGAIN = 30.0
SHOP_COVERAGE = "shop-coverage"


def hour_minute(at: str) -> tuple[int, int]:
    hour, minute = at.split(":")
    return int(hour), int(minute)


# The worker that runs a tick reads its own clock, which may be a little behind
# beat's: at 02:59:58 on its clock, a 03:00 tick is still tonight's, not yesterday's
# (whose slot is claimed already, so the night would pass without a sweep).
CLOCK_SKEW = timedelta(minutes=2)


def slot_for(now: datetime, at: str, timezone: str) -> pendulum.DateTime:
    """The latest scheduled instant at or before `now` (give or take CLOCK_SKEW), in UTC.

    Whatever time a tick actually fires (late, twice in a repeated hour, after
    a clock jump, on a worker whose clock is slightly behind), ticks of one
    local day get the same slot.
    """
    hour, minute = hour_minute(at)
    local = pendulum.instance(now + CLOCK_SKEW).in_timezone(timezone)
    candidate = _at(local, hour, minute)
    # Instants, not readings: in one zone Python compares wall times (PEP 495), so 02:05
    # after the autumn change looked earlier than that night's first 02:30.
    if candidate.timestamp() > local.timestamp():
        candidate = _at(local.subtract(days=1), hour, minute)
    return candidate.in_timezone("UTC")


def _at(day: pendulum.DateTime, hour: int, minute: int) -> pendulum.DateTime:
    # Built from the calendar date, never by moving a clock time, and the earlier of
    # the two readings: in a repeated hour the first occurrence; in a skipped hour
    # (02:30 on the spring night) the reading with the offset after the jump, before
    # the jump itself, so a tick that fires just after the jump is still that day's.
    return min(
        pendulum.datetime(day.year, day.month, day.day, hour, minute, tz=day.timezone, fold=fold)
        for fold in (0, 1)
    )


def beat_schedule(settings: Any) -> dict[str, dict[str, Any]]:
    sweep_hour, sweep_minute = hour_minute(settings.sweep.at)
    report_hour, report_minute = hour_minute(settings.sweep.report_at)
    return {
        NIGHTLY_SWEEP: {
            "task": SWEEP_TASK,
            # On daylight-saving nights: once a local day, a time in the skipped hour
            # moved forward by it (tests/unit/test_beat_schedule.py pins Celery's crontab).
            "schedule": crontab(hour=sweep_hour, minute=sweep_minute),
            "kwargs": {"schedule": NIGHTLY_SWEEP},
        },
        DAILY_REPORT: {
            "task": REPORT_TASK,
            "schedule": crontab(hour=report_hour, minute=report_minute),
            "kwargs": {"schedule": DAILY_REPORT},
        },
        # An hour before the sweep: /metrics then shows rows uncovered or back after a
        # restore, and the sweep erases again what came back (worker/sweeps/reapply.py).
        SHOP_COVERAGE: {
            "task": COVERAGE_TASK,
            "schedule": crontab(hour=(sweep_hour - 1) % 24, minute=sweep_minute),
            "kwargs": {"schedule": SHOP_COVERAGE},
        },
    }


class OutboxSchedule(every_schedule):
    """Every `run_every` while LETHE_SHOP_DATABASE_URL has `lethe_outbox`, else never: a shop
    without an outbox gets no relay task every two seconds."""

    _seen: tuple[float, bool] | None = None

    def is_due(self, last_run_at: datetime) -> schedstate:
        due, wait = super().is_due(last_run_at)
        if due and not self._has_outbox():
            return schedstate(False, OUTBOX_LOOK_AGAIN)
        return schedstate(due, wait)

    def _has_outbox(self) -> bool:
        import time

        from worker.settings import current_settings
        from worker.shop.outbox import has_outbox

        now = time.monotonic()
        if self._seen is None or now - self._seen[0] >= OUTBOX_LOOK_AGAIN:
            self._seen = (now, has_outbox(current_settings().shop_database_url))
        return self._seen[1]

    def __reduce__(self) -> tuple[Any, ...]:
        # beat keeps its entries in its schedule file: the interval only, no URL
        return (self.__class__, (self.run_every,))


def outbox_entry(settings: Any) -> dict[str, Any]:
    every = settings.outbox_every
    return {
        "task": OUTBOX_TASK,
        "schedule": OutboxSchedule(timedelta(seconds=every)),
        # ticks queued while no worker ran are dropped, not run one after another:
        # the next one relays the whole backlog
        "options": {"expires": max(every * 5, 10.0)},
    }


def install(app: Any, settings: Any) -> None:
    """Give the Celery app its beat schedule, in the sweep's own time zone."""
    app.conf.beat_schedule = {**beat_schedule(settings), OUTBOX_RELAY: outbox_entry(settings)}
    # crontab reads hours in the app's time zone; only beat and ETAs use it.
    app.conf.timezone = settings.sweep.timezone
    # beat opens its schedule file before any other Lethe code makes the folder
    settings.home.mkdir(parents=True, exist_ok=True)
    app.conf.beat_schedule_filename = str(settings.home / "celerybeat-schedule")
