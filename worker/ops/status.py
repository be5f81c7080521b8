"""Health at a glance for ops: broker, store, last sweep, overdue lifecycles, dead letters.

`lethe status` prints it and exits non-zero when something needs a human, so
cron or a monitoring probe can run it; the dashboard's verdict banner uses the
same store checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from worker.brokers.consumers import Orphans
from worker.domain.durations import Duration
from worker.ops.dashboard.figures import (
    DEFAULT_GRACE,
    Sweep,
    dead_letter_figures,
    last_finished_sweep,
    overdue_count,
    overdue_cutoff,
)
from worker.settings import Settings, safe_url, sqlite_file
from worker.sweeps.runs import HEARTBEAT_LOST_AFTER


class Level(IntEnum):
    """Ordered by gravity; the worst level is the exit code of `lethe status`."""

    ok = 0
    attention = 1  # the system runs, but a human must look (overdue, dead letters, failed sweep)
    down = 2  # a service Lethe needs is unreachable


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str


def worst(checks: list[Check]) -> Level:
    return max((c.level for c in checks), default=Level.ok)


def broker_check(settings: Settings, timeout: float = 5.0) -> Check:
    if settings.embedded:
        folder = settings.broker_folder / "out"
        if not folder.is_dir():
            return Check(
                "broker",
                Level.down,
                f"embedded queue folder {folder} is missing: run `lethe worker` once to make it",
            )
        waiting = sum(1 for _ in Path(folder).glob("*.msg"))
        return Check(
            "broker", Level.ok, f"embedded queue in {folder}, {waiting} message(s) waiting"
        )
    from kombu import Connection

    from worker.app import celery_config, events_queue

    options = celery_config(settings)["broker_transport_options"]
    try:
        with Connection(
            settings.broker_url, transport_options=options, connect_timeout=timeout
        ) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2)
            waiting = _queue_length(connection, events_queue(settings))
    except Exception as exc:  # kombu raises transport-specific errors; any means unreachable
        return Check(
            "broker",
            Level.down,
            f"cannot reach {safe_url(settings.broker_url)} ({type(exc).__name__}): "
            "start it or fix LETHE_BROKER_URL",
        )
    shown = f", {waiting} message(s) waiting" if waiting is not None else ""
    return Check("broker", Level.ok, f"{safe_url(settings.broker_url)} answers{shown}")


def broker_orphans(settings: Settings, timeout: float = 5.0) -> Orphans | None:
    """On Redis, what workers whose heartbeat stopped hold; None on another broker, or when
    Redis cannot be reached (the broker check says why)."""
    if settings.embedded or not settings.broker_url.startswith(("redis://", "rediss://")):
        return None
    from worker.app import celery_config
    from worker.brokers.consumers import orphans_at

    options = celery_config(settings)["broker_transport_options"]
    try:
        return orphans_at(settings.broker_url, options, timeout)
    except Exception:  # kombu and redis-py raise their own errors; any means unreachable
        return None


def orphans_check(settings: Settings, timeout: float = 5.0) -> Check | None:
    """On Redis, the messages held by workers whose heartbeat stopped (RabbitMQ gives a dead
    consumer's back as its connection closes; the embedded broker has one worker)."""
    from worker.brokers.consumers import DEAD_AFTER_SECONDS, HEARTBEAT_SECONDS

    found = broker_orphans(settings, timeout)
    if found is None:
        return None
    if not found.messages:
        return Check("orphaned", Level.ok, "no message held by a stopped worker")
    return Check(
        "orphaned",
        Level.attention,
        f"{found.messages} message(s) held by a stopped worker for {int(found.oldest_seconds)} s "
        f"(its heartbeat stopped {DEAD_AFTER_SECONDS} s before): a running worker gives them "
        f"back within {HEARTBEAT_SECONDS} s, so none runs if this stays; start one",
    )


def broker_checks(settings: Settings, timeout: float = 5.0) -> list[Check]:
    """The broker's check, and the orphaned messages' where the broker has any."""
    checks = [broker_check(settings, timeout)]
    if checks[0].level is not Level.down and (orphaned := orphans_check(settings, timeout)):
        checks.append(orphaned)
    return checks


def _queue_length(connection, queue: str) -> int | None:
    channel = connection.default_channel
    if connection.transport.driver_type == "redis":
        # kombu's passive declare looks for the queue's key without the install's
        # global_keyprefix, so it never found it (and always said 0): count the list itself.
        # An emptied list has no key, and counts 0.
        return int(channel.client.llen(queue))
    try:
        _, count, _ = channel.queue_declare(queue=queue, passive=True)
        return int(count)
    except Exception as exc:
        # RabbitMQ answers 404 for a queue that no worker or client has declared yet
        return 0 if getattr(exc, "code", None) == 404 else None


def database_check(settings: Settings) -> Check:
    shown = safe_url(settings.database_url)
    path = sqlite_file(settings.database_url)
    if path is not None and not path.exists():
        return Check(
            "database", Level.down, f"no store at {path}: run `lethe worker` or `lethe demo`"
        )
    try:
        return schema_check(settings.database_url)
    except SQLAlchemyError as exc:
        return Check(
            "database",
            Level.down,
            f"cannot reach {shown} ({type(exc).__name__}): start it or fix LETHE_DATABASE_URL",
        )


def schema_check(url: str) -> Check:
    """Whether the store's schema is the one this code needs; a probe never migrates it
    (an older worker may still be running on it)."""
    from worker.store.migrate import current_revision, head_revision, schema_behind

    shown = safe_url(url)
    current, head = current_revision(url), head_revision(url)
    if current == head:
        return Check("database", Level.ok, f"{shown} answers, schema up to date")
    behind = f"{shown}: {schema_behind(current, head)}"
    if url.startswith("sqlite"):
        return Check(
            "database",
            Level.attention,
            f"{behind}: the next `lethe worker` migrates it (or run `lethe db upgrade`)",
        )
    return Check("database", Level.down, f"{behind}: run `lethe db upgrade` first")


def sweep_check(
    sweep: Sweep | None, now: datetime, grace: Duration, events_since: datetime | None = None
) -> Check:
    """`events_since`: when events were already arriving (the oldest one received before
    the grace period, if any), to tell a new install from a beat that never ran."""
    if sweep is None:
        if events_since is not None:
            return Check(
                "last sweep",
                Level.attention,
                f"none recorded, though events arrive since {_ago(now, events_since)}: "
                "is beat running (`celery -A worker.app beat`, or `lethe worker` embedded)?",
            )
        return Check("last sweep", Level.ok, "none recorded yet")
    when = _ago(now, sweep.started_at)
    if sweep.status == "failed":
        return Check(
            "last sweep",
            Level.attention,
            f"#{sweep.id} ({sweep.schedule}) failed {when}: {sweep.note or 'no note'}; "
            "see the worker's log for its task id, then `lethe purge` to run it again",
        )
    if sweep.status == "awaiting_approval":
        return Check(
            "last sweep",
            Level.attention,
            f"#{sweep.id} ({sweep.schedule}) stopped before touching anything {when}, "
            + (
                sweep.note.replace("waiting for approval: ", "because ", 1)
                if sweep.note
                else f"waiting for approval: `lethe purge --approve {sweep.id}` once checked"
            ),
        )
    if sweep.status == "running":
        # a long sweep is fine while its worker writes heartbeats
        alive_at = sweep.heartbeat_at or sweep.started_at
        if now - alive_at > HEARTBEAT_LOST_AFTER and sweep.finished_at is None:
            return Check(
                "last sweep",
                Level.attention,
                f"#{sweep.id} ({sweep.schedule}) running since {when}, no heartbeat for "
                f"{_ago(now, alive_at).removesuffix(' ago')}: check its worker is alive",
            )
        return Check("last sweep", Level.ok, f"#{sweep.id} ({sweep.schedule}) running, {when}")
    if sweep.started_at <= overdue_cutoff(now, grace):
        return Check(
            "last sweep",
            Level.attention,
            f"#{sweep.id} started {when}, none since: is beat running?",
        )
    duration = f" in {sweep.duration:.1f} s" if sweep.duration is not None else ""
    if sweep.failed:
        return Check(
            "last sweep",
            Level.attention,
            f"#{sweep.id} ({sweep.schedule}) {sweep.status} {when}{duration}: "
            f"{sweep.erased} erased, {sweep.failed} failed: `lethe audit --run {sweep.id}` "
            "lists them and why",
        )
    return Check(
        "last sweep",
        Level.ok,
        f"#{sweep.id} ({sweep.schedule}) {sweep.status} {when}{duration}: "
        f"{sweep.due} due, {sweep.erased} erased, 0 failed",
    )


def events_waiting_since(session: Session, now: datetime, grace: Duration) -> datetime | None:
    """An event received before the grace period began, if any (asked only while no sweep
    is recorded: the event log is read in insertion order, so an old one comes first)."""
    from sqlalchemy import select

    from worker.store.schema import StoredEvent

    cutoff = overdue_cutoff(now, grace)
    return session.scalar(
        select(StoredEvent.received_at).where(StoredEvent.received_at < cutoff).limit(1)
    )


def overdue_check(count: int, grace: Duration) -> Check:
    if count:
        return Check(
            "overdue",
            Level.attention,
            f"{count} lifecycle(s) due for more than {grace} and not erased: "
            "check the sweeps (`lethe deadlines --due-before ...`, the dashboard)",
        )
    return Check("overdue", Level.ok, f"none due for more than {grace}")


def dead_letter_check(total: int) -> Check:
    if total:
        return Check(
            "dead letters",
            Level.attention,
            f"{total} event(s) refused: read them with `lethe dead-letters`, fix the producer "
            "or the register, then `lethe dead-letters --replay`",
        )
    return Check("dead letters", Level.ok, "none")


# The store's large tables, and from how many rows their statistics matter: below it,
# a whole-table scan costs about what an index lookup does.
_PLANNED_TABLES = ("events", "lifecycles", "event_summary")
STATISTICS_FROM_ROWS = 100_000


def statistics_check(session: Session) -> Check | None:
    """On PostgreSQL, whether the store's large tables have statistics: without them
    PostgreSQL plans a batch's lookups as scans of the whole table, and ingestion slows as
    the store grows (bench/README.md, "Memory"). None on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    rows = session.execute(
        text(
            "SELECT relname, n_live_tup, n_mod_since_analyze, "
            "coalesce(last_analyze, last_autoanalyze) IS NOT NULL "
            "FROM pg_stat_user_tables WHERE relname = ANY(:tables) ORDER BY relname"
        ),
        {"tables": list(_PLANNED_TABLES)},
    ).all()
    autovacuum = session.execute(text("SHOW autovacuum")).scalar_one() == "on"
    # never analysed, or grown to more than twice what was analysed
    stale = [
        (name, live)
        for name, live, changed, analysed in rows
        if live >= STATISTICS_FROM_ROWS and (not analysed or changed > live)
    ]
    if stale:
        tables = ", ".join(f"{name} ({live:,} rows)" for name, live in stale)
        remedy = (
            "run `ANALYZE` on the store (autovacuum is off on this server: turn it on, or "
            "schedule `ANALYZE`)"
            if not autovacuum
            else "run `ANALYZE` on the store, and check why autovacuum has not"
        )
        return Check(
            "statistics",
            Level.attention,
            f"PostgreSQL has no up-to-date statistics for {tables}: it plans each batch's "
            f"lookups as scans of the whole table, and ingestion slows as the store grows; "
            f"{remedy}",
        )
    if not autovacuum:
        return Check(
            "statistics",
            Level.ok,
            "up to date for now; autovacuum is off on this server, so the store's tables "
            "are analysed only by hand",
        )
    return Check("statistics", Level.ok, "kept by autovacuum")


def store_checks(session: Session, now: datetime, grace: Duration = DEFAULT_GRACE) -> list[Check]:
    """The checks that read the store (needs a reachable, migrated store)."""
    _, letters = dead_letter_figures(session, limit=0)
    sweep = last_finished_sweep(session)
    checks = [
        sweep_check(
            sweep, now, grace, None if sweep else events_waiting_since(session, now, grace)
        ),
        overdue_check(overdue_count(session, now, grace), grace),
        dead_letter_check(letters),
    ]
    statistics = statistics_check(session)
    return checks if statistics is None else [*checks, statistics]


def run_checks(settings: Settings, now: datetime, grace: Duration = DEFAULT_GRACE) -> list[Check]:
    from worker.store.sessions import reading

    checks = [*broker_checks(settings), database_check(settings)]
    if checks[-1].level is Level.down:
        return checks
    try:
        with reading(settings.database_url) as session:
            checks += store_checks(session, now, grace)
    except SQLAlchemyError as exc:
        checks.append(
            Check("database", Level.down, f"reading the store failed ({type(exc).__name__})")
        )
    return checks


def render(checks: list[Check], now: datetime) -> str:
    verdict = {
        Level.ok: "OK: the register is being enforced",
        Level.attention: "ATTENTION: something needs a human",
        Level.down: "DOWN: a service Lethe needs is unreachable",
    }[worst(checks)]
    width = max(len(c.name) for c in checks)
    lines = [f"lethe status at {now.isoformat(timespec='seconds')}: {verdict}"]
    for check in checks:
        lines.append(f"  {check.name.ljust(width)}  {check.level.name.upper():<9}  {check.detail}")
    return "\n".join(lines)


def _ago(now: datetime, moment: datetime) -> str:
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return f"at {moment.isoformat(timespec='seconds')}"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{seconds} s ago"
