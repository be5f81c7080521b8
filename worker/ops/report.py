"""The daily report beat writes to the log: counts only, never a subject."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from worker.domain.register import Register
from worker.settings import Settings
from worker.store.schema import DeadLetter, PurgeRun, ScheduleSlot, StoredLifecycle
from worker.store.sessions import now_utc, transaction


def report_counts(url: str, now: datetime) -> dict[str, int]:
    """Due, overdue (due for more than a day), held, erased in the last day, awaiting approval."""
    day_ago = now - timedelta(days=1)
    with transaction(url) as session:

        def count(model: Any, *where: Any) -> int:
            return session.scalar(select(func.count()).select_from(model).where(*where)) or 0

        due = StoredLifecycle.deadline_at <= now
        return {
            "due": count(StoredLifecycle, StoredLifecycle.state == "active", due),
            "overdue": count(
                StoredLifecycle,
                StoredLifecycle.state == "active",
                StoredLifecycle.deadline_at <= day_ago,
            ),
            "held": count(StoredLifecycle, StoredLifecycle.state == "held"),
            "erased_last_day": count(
                StoredLifecycle,
                StoredLifecycle.state == "erased",
                StoredLifecycle.updated_at > day_ago,
            ),
            "awaiting_approval": count(PurgeRun, PurgeRun.status == "awaiting_approval"),
            "failed_runs_last_day": count(
                PurgeRun, PurgeRun.status == "failed", PurgeRun.started_at > day_ago
            ),
            "dead_letters": count(DeadLetter),
        }


def daily_report(
    settings: Settings,
    register: Register,
    schedule: str,
    slot: datetime,
    now: datetime,
    log: Any,
) -> dict[str, Any]:
    """Claim the report's slot (a second beat's tick is a no-op), then log the counts."""
    try:
        with transaction(settings.database_url) as session:
            session.add(ScheduleSlot(schedule=schedule, slot_at=slot, claimed_at=now_utc()))
    except IntegrityError:
        return {"status": "skipped"}
    counts = report_counts(settings.database_url, now)
    alarming = counts["overdue"] or counts["awaiting_approval"] or counts["failed_runs_last_day"]
    (log.warning if alarming else log.info)(
        "ALERT daily retention report" if alarming else "daily retention report",
        register=register.name,
        **counts,
    )
    return {"status": "done", **counts}
