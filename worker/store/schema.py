"""Lethe's own store, its tables: the event log, lifecycles, dead letters, sweeps and their audit.

PostgreSQL in production, SQLite embedded. The schema is owned by the Alembic
migrations in `worker/store/migrations`; these models describe it for queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def require_aware(value: datetime) -> None:
    """A time the store keeps must say its offset: a naive one would shift by hours."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime given to the store: pass an aware one")


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on PostgreSQL and SQLite alike.

    SQLite has no time zone type; storing naive UTC keeps comparisons such as
    `deadline_at <= now` correct in SQL on both engines.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        require_aware(value)
        # A plain UTC datetime built from the fields: psycopg dumps a pendulum one
        # ten times slower, and pendulum's own astimezone is slow too.
        v = value
        plain = datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)
        plain -= value.utcoffset()
        return plain if dialect.name == "sqlite" else plain.replace(tzinfo=UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        # plain datetimes: pendulum.instance costs ~20 µs a row, and only the
        # few anchors that get calendar arithmetic need it (retention.py)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class StoredEvent(Base):
    """The event log; its primary key is the shop's event id, which makes ingestion idempotent."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StoredLifecycle(Base):
    __tablename__ = "lifecycles"
    __table_args__ = (
        UniqueConstraint("subject", "activity", name="uq_lifecycles_subject_activity"),
        # "What is due before T" is the sweep's and the dashboard's question.
        Index("ix_lifecycles_state_deadline", "state", "deadline_at"),
        # Erased lifecycles by erasure time: each sweep forgets people erased long ago
        # (worker/sweeps/forgetting.py) by paging on it, not by reading every lifecycle.
        Index("ix_lifecycles_state_erased_at", "state", "erased_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(200))
    activity: Mapped[str] = mapped_column(String(100))
    anchor_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    state: Mapped[str] = mapped_column(String(10))
    then: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When a sweep last erased its data (the sweep's clock): later events start anew.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The last run whose erasure of it failed: that run's parts do not claim it again.
    failed_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class EventSummary(Base):
    """Per subject, event type and variant, the latest event (worker/domain/summary.py):
    what ingestion reads instead of the whole log. No payload (joined from the log)."""

    __tablename__ = "event_summary"

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(100), primary_key=True)
    variant: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # the digest of the data fields the register read when the row was written
    spec: Mapped[str] = mapped_column(String(16))


class DeadLetter(Base):
    """An event that could not be used, kept with its reason until replayed."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)


class Delivery(Base):
    """Redeliveries of a task, counted so a message that kills its worker cannot loop forever."""

    __tablename__ = "deliveries"

    task_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())


class PurgeRun(Base):
    """One sweep: scheduled (its slot claimed under a unique constraint) or manual."""

    __tablename__ = "purge_runs"
    __table_args__ = (
        UniqueConstraint("schedule", "slot_at", name="uq_purge_runs_schedule_slot"),
        Index("ix_purge_runs_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule: Mapped[str] = mapped_column(String(100))
    slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The instant deadlines are compared with (`lethe purge --now`, the demo's clock).
    now_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # running | done | failed | awaiting_approval | dry_run
    status: Mapped[str] = mapped_column(String(20))
    due: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)
    erased: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    parts: Mapped[int] = mapped_column(Integer, default=1)
    parts_done: Mapped[int] = mapped_column(Integer, default=0)
    register_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    plan: Mapped[str | None] = mapped_column(Text, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class Erasure(Base):
    """The audit trail, append-only: what was done to whom (as a keyed hash), never the data."""

    __tablename__ = "erasures"
    __table_args__ = (
        # hash: looked up by equality only, and its keys are random (migration 0003)
        Index("ix_erasures_subject_ref", "subject_ref", postgresql_using="hash"),
        Index("ix_erasures_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("purge_runs.id"))
    subject_ref: Mapped[str] = mapped_column(String(64))
    activity: Mapped[str] = mapped_column(String(100))
    rule: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(200))
    columns: Mapped[str] = mapped_column(Text)
    strategy: Mapped[str] = mapped_column(Text)
    # erased | nothing_to_erase | kept_by_law | failed
    outcome: Mapped[str] = mapped_column(String(20))
    rows: Mapped[int] = mapped_column(Integer)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ErasureReceipt(Base):
    """What a batch deleted (rows, suppression hashes) for a target whose rows a second try
    cannot count again, written before the shop commits and dropped once the audit is.

    A worker killed between the shop's commit and the store's leaves its lifecycles
    due with their rows already gone; the next sweep reads the receipt instead of
    auditing "nothing to erase" and losing the suppression hashes (worker/store/receipts.py).
    """

    __tablename__ = "erasure_receipts"

    lifecycle_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target: Mapped[str] = mapped_column(String(200), primary_key=True)
    # the lifecycle's deadline when erased: a lifecycle reopened since has another
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rows: Mapped[int] = mapped_column(Integer)
    suppressed: Mapped[str] = mapped_column(Text)  # JSON [[hash, activity], ...]
    run_id: Mapped[int] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Hold(Base):
    """A legal hold placed by hand (`lethe hold place`); dispute events hold through the log."""

    __tablename__ = "holds"
    __table_args__ = (Index("ix_holds_subject", "subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lift_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Suppression(Base):
    """Keyed hashes of addresses that must not be contacted again (newsletter unsubscribes),
    with the times that decide it (worker/store/suppression.py)."""

    __tablename__ = "suppression"
    # each sweep drops what is older than LETHE_SUPPRESSION_DAYS: found on an index,
    # not by reading every address ever suppressed
    __table_args__ = (Index("ix_suppression_kept_from", "kept_from"),)

    value_hash: Mapped[str] = mapped_column(String(100), primary_key=True)
    activity: Mapped[str] = mapped_column(String(100))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # the latest opposition (unsubscription, erasure) and subscription, as dated by the shop
    opposed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    subscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # when a sweep erased data holding the address: an opposition is kept until then
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    kept_from: Mapped[datetime] = mapped_column(UTCDateTime())  # the latest of the three


class ScheduleSlot(Base):
    """Scheduled runs other than sweeps (the daily report) claim their slot here."""

    __tablename__ = "schedule_slots"

    schedule: Mapped[str] = mapped_column(String(100), primary_key=True)
    slot_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Backfill(Base):
    """One `lethe backfill` that sent events from the shop's rows (migration 0012): the
    sweep after it waits for a DPO's approval, as a first sweep does."""

    __tablename__ = "backfills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sources: Mapped[str] = mapped_column(Text)  # "1,2,5": the register's sources read
    rows: Mapped[int] = mapped_column(Integer, default=0)
    events: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)


class ShopCoverage(Base):
    """The coverage task's last count per target: what /metrics reports and what tells the
    nightly sweep to erase rows found back (worker/sweeps/coverage.py). Counts and example
    primary keys only, never a subject."""

    __tablename__ = "shop_coverage"

    activity: Mapped[str] = mapped_column(String(100), primary_key=True)
    target: Mapped[str] = mapped_column(String(200), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(200))
    rows: Mapped[int] = mapped_column(Integer)
    covered: Mapped[int] = mapped_column(Integer)
    uncovered: Mapped[int] = mapped_column(Integer)
    back: Mapped[int] = mapped_column(Integer)
    examples: Mapped[str] = mapped_column(Text)  # JSON list of up to 10 primary keys
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
