"""A purge run as every step of a sweep sees it: the refusal, the clock check, the
result a run reports, its row read back, and the heartbeat a part beats.

Opening, approving and closing runs is worker/sweeps/run.py, which imports the
plan (worker/sweeps/plan.py) and the erasure (worker/sweeps/erasure.py). What those two need
of a run is here, below all three, so that no module imports the one importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from worker.domain.register import Register
from worker.domain.sweep_rules import register_digest
from worker.settings import Settings
from worker.store.schema import PurgeRun
from worker.store.sessions import now_utc, reading

# The schedule name of a re-erasure's run (`lethe purge --reapply`, worker/sweeps/reapply.py).
REAPPLY_SCHEDULE = "reapply"


class SweepRefused(RuntimeError):
    """A request the sweep cannot follow (approving a run that awaits nothing, ...)."""


# A sweep's clock may run this far ahead of the real one (beat's own runs carry their
# slot time, a little behind it at most); further would erase before the deadline.
FUTURE_TOLERANCE = timedelta(minutes=5)


def ahead_of_the_clock(moment: datetime) -> timedelta | None:
    """How far `moment` is ahead of the real clock, when that is too far for a sweep."""
    ahead = moment - now_utc()
    return ahead if ahead > FUTURE_TOLERANCE else None


@dataclass
class SweepResult:
    run_id: int | None
    status: str  # done | awaiting_approval | dry_run | failed | skipped
    due: int = 0
    held: int = 0
    erased: int = 0
    failed: int = 0
    rows: int = 0
    reasons: list[str] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


def new_run(
    register: Register,
    *,
    schedule: str,
    now: datetime,
    moment: datetime,
    status: str = "running",
    slot_at: datetime | None = None,
    due: int = 0,
    note: str | None = None,
) -> PurgeRun:
    """A run's row as it opens, one part, nothing counted yet: a sweep's or a re-erasure's."""
    return PurgeRun(
        schedule=schedule,
        slot_at=slot_at,
        now_at=now,
        started_at=moment,
        heartbeat_at=moment,
        status=status,
        due=due,
        held=0,
        erased=0,
        failed=0,
        rows=0,
        parts=1,
        parts_done=0,
        register_digest=register_digest(register),
        note=note,
    )


def load_run(settings: Settings, run_id: int) -> PurgeRun:
    with reading(settings.database_url) as session:
        run = session.get(PurgeRun, run_id)
        if run is None:
            raise SweepRefused(f"there is no run {run_id}")
        session.expunge(run)
        return run


# A running part beats at every batch; silent this long, its worker is presumed lost: the
# run is closed as interrupted and what it had not erased stays due for a later run.
HEARTBEAT_LOST_AFTER = timedelta(minutes=30)


def heartbeat(session: Session, run_id: int) -> None:
    session.execute(update(PurgeRun).where(PurgeRun.id == run_id).values(heartbeat_at=now_utc()))
