"""Beat's nightly sweep across the daylight-saving nights, with Celery's own schedule
objects on a clock the test moves: one sweep per local day, and the slot each claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from celery.beat import DEFAULT_MAX_INTERVAL, ScheduleEntry

from schedules.beat import NIGHTLY_SWEEP, install, slot_for
from worker.settings import load_settings

PARIS = "Europe/Paris"


def _beat_sends(home: Path, at: str, start: datetime, days: int) -> list[datetime]:
    """When beat sends the nightly sweep between `start` and `days` later: its loop asks
    the entry is_due() at each wake-up, sleeps what it answers (at most
    DEFAULT_MAX_INTERVAL), and after a send carries on with the next entry."""
    app = Celery("beat-on-a-test-clock")
    install(app, load_settings({"LETHE_HOME": str(home), "LETHE_SWEEP_AT": at}))
    clock = [start]
    spec = app.conf.beat_schedule[NIGHTLY_SWEEP]
    # beat's clock is app.now(): the present in the app's time zone
    spec["schedule"].nowfun = lambda: clock[0].astimezone(app.timezone)
    # last run: now, as for a beat starting at `start` with no schedule file
    entry = ScheduleEntry(name=NIGHTLY_SWEEP, app=app, **spec)
    sends = []
    while clock[0] < start + timedelta(days=days):
        due, wait = entry.is_due()
        if due:
            sends.append(clock[0].astimezone(app.timezone))
            entry = next(entry)
        clock[0] += timedelta(seconds=max(1.0, min(wait, DEFAULT_MAX_INTERVAL)))
    return sends


def _local(sends: list[datetime]) -> list[str]:
    return [moment.isoformat() for moment in sends]


# (sweep time, the day before the change at noon UTC, what beat sends over two days)
NIGHTS = [
    # 02:30 does not exist on 2026-03-29 in Paris (02:00 -> 03:00): the sweep moves
    # forward by the hour the clocks skip, as a deadline in that hour does.
    ("02:30", "2026-03-28", ["2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("03:00", "2026-03-28", ["2026-03-29T03:00:00+02:00", "2026-03-30T03:00:00+02:00"]),
    # 02:30 happens twice on 2026-10-25 (03:00 -> 02:00): the first one only.
    ("02:30", "2026-10-24", ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    ("03:00", "2026-10-24", ["2026-10-25T03:00:00+01:00", "2026-10-26T03:00:00+01:00"]),
]


@pytest.mark.parametrize(("at", "day_before", "expected"), NIGHTS)
def test_beat_sends_one_sweep_per_local_day_across_a_daylight_saving_night(
    tmp_path, at, day_before, expected
):
    start = datetime.fromisoformat(f"{day_before}T12:00:00+00:00")
    sends = _beat_sends(tmp_path, at, start, days=2)
    assert _local(sends) == expected
    slots = [slot_for(moment, at, PARIS) for moment in sends]
    assert len(set(slots)) == len(sends)
    assert all(slot <= moment for slot, moment in zip(slots, sends, strict=True))


def test_the_spring_sweep_at_0230_claims_that_nights_slot():
    sent = datetime.fromisoformat("2026-03-29T03:30:00+02:00")
    assert slot_for(sent, "02:30", PARIS) == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert slot_for(sent - timedelta(days=1), "02:30", PARIS) == datetime(
        2026, 3, 28, 1, 30, tzinfo=UTC
    )


def test_a_tick_at_the_autumns_second_0230_claims_the_first_ones_slot():
    # A second beat (or one restarted without its schedule file) ticking at the
    # repeated 02:30 names the slot the first sweep of the night already claimed.
    first = datetime.fromisoformat("2026-10-25T02:30:00+02:00")
    second = datetime.fromisoformat("2026-10-25T02:30:00+01:00")
    assert second - first == timedelta(hours=1)
    assert slot_for(second, "02:30", PARIS) == slot_for(first, "02:30", PARIS)
    assert slot_for(first, "02:30", PARIS) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
