"""Lethe's own store: the event log, lifecycles, dead letters, sweeps and their audit.

PostgreSQL in production, SQLite embedded. The schema is owned by the Alembic
migrations in `worker/migrations`; these models describe it for queries.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from itertools import islice
from typing import Any, TypeVar

import pendulum
import sqlalchemy as sa
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
    any_,
    bindparam,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


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
        # (worker/forgetting.py) by paging on it, not by reading every lifecycle.
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
    auditing "nothing to erase" and losing the suppression hashes (worker/receipts.py).
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
    with the times that decide it (worker/suppression.py)."""

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


def make_engine(url: str) -> Engine:
    # hide_parameters: a database error's text would otherwise quote the row's
    # values (subjects, event data), and errors end up in logs and dead letters.
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, hide_parameters=True)
        _sqlite_serialised_writes(engine)
        return engine
    # connect_timeout: an unreachable host fails in seconds (dashboard, status)
    # instead of hanging on the operating system's TCP timeout.
    return create_engine(
        url, pool_pre_ping=True, hide_parameters=True, connect_args=POSTGRES_CONNECT_ARGS
    )


POSTGRES_CONNECT_ARGS = {"connect_timeout": 10}


def one_of(column: Any, values: Sequence[Any], bind: Any) -> Any:
    """`column IN (values)`; on PostgreSQL `= ANY(array)`, one parameter however many values
    (an IN list of thousands costs more to render and bind than to run)."""
    if bind.dialect.name == "postgresql":
        element = column.type
        if isinstance(element, String) and element.length is not None:
            # `::VARCHAR(20)[]` would silently cut a longer value down to one that matches
            element = String()
        return column == any_(bindparam(None, list(values), type_=ARRAY(element)))
    return column.in_(values)


# Values given to one `one_of` at a time (worker/ingest.py picks its own sizes): each
# statement stays small however long the list of subjects or ids.
ONE_OF_CHUNK = 1000

_T = TypeVar("_T")


def chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """`items` in lists of `size` in order, the last one shorter; none for no items."""
    if size < 1:
        # islice would take nothing each time: the items would be dropped unsaid
        raise ValueError(f"chunk size must be 1 or more: {size!r}")
    rest = iter(items)
    while chunk := list(islice(rest, size)):
        yield chunk


def keyset_after(moment: Any, key: Any, after: tuple[datetime, int]) -> tuple[Any, ...]:
    """Rows after `after` in (moment, key) order: keyset paging. The plain bound on
    `moment` lets an index on it start at the cursor instead of walking past every row
    already paged through."""
    cursor = sa.tuple_(sa.literal(after[0], UTCDateTime()), sa.literal(after[1], Integer()))
    return (moment >= after[0], sa.tuple_(moment, key) > cursor)


def _sqlite_serialised_writes(engine: Engine) -> None:
    # pysqlite starts transactions lazily, so two processes could read the same
    # subject's events and both write a lifecycle from a partial view. BEGIN
    # IMMEDIATE takes the write lock first; WAL lets readers go on meanwhile.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL stays set in the file; setting it again needs a lock a writer may hold
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # A read (status, dashboard, metrics) must not queue behind a sweep's batch:
        # in WAL a plain BEGIN reads the last commit while the writer goes on.
        reads = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reads else "BEGIN IMMEDIATE")


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL per process (Celery's prefork children each get their own)."""
    engine = make_engine(url)
    _created.append(engine)
    return engine


_created: list[Engine] = []


def dispose_inherited_engines() -> None:
    """In a forked child: drop the parent's pooled connections without closing them."""
    for engine in _created:
        engine.dispose(close=False)


# Every forked child, Celery's prefork children and a shop's own (gunicorn,
# multiprocessing) alike, drops the pooled connections it inherited: two processes
# on one socket corrupt each other's results.
os.register_at_fork(after_in_child=dispose_inherited_engines)


@lru_cache(maxsize=8)
def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


READ_ONLY = "lethe_read_only"


@contextmanager
def transaction(url: str) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error."""
    with session_factory(url)() as session, session.begin():
        yield session


@lru_cache(maxsize=8)
def read_only_engine(url: str) -> Engine:
    """`engine_for(url)` marked for reads: on SQLite they do not wait for the write lock.
    It shares that engine's pool (and so its disposal after a fork)."""
    return engine_for(url).execution_options(**{READ_ONLY: True})


@contextmanager
def reading(url: str) -> Iterator[Session]:
    """A transaction that only reads: on SQLite it does not wait for the write lock."""
    with Session(read_only_engine(url), expire_on_commit=False) as session, session.begin():
        yield session


def now_utc() -> pendulum.DateTime:
    return pendulum.now("UTC")


def lock_subjects(session: Session, subjects: list[str]) -> None:
    """Hold these subjects until the transaction ends (ingestion, holds placed or lifted by
    hand, and a sweep forgetting them)."""
    # Two workers ingesting events of one subject must not each compute its
    # lifecycles from half of the events, nor a sweep delete a subject's log while
    # a new event's lifecycle is computed from it, nor an ingestion that read no hold
    # write a lifecycle back as active over one `lethe hold place` just set. Locks are
    # taken in hash order, so two batches never wait on each other in a cycle. SQLite
    # serialises writers already (BEGIN IMMEDIATE, _sqlite_serialised_writes).
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        sa.text(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(s, 0) AS h "
            "FROM unnest(CAST(:subjects AS text[])) AS s) AS keys ORDER BY h"
        ),
        {"subjects": subjects},
    )
