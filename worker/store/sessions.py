"""Sessions on Lethe's store: one engine per URL, units of work, reads that do not wait,
and the small SQL helpers every room shares (chunks, `one_of`, keyset paging, locks)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from itertools import islice
from typing import Any, TypeVar

import pendulum
import sqlalchemy as sa
from sqlalchemy import (
    Integer,
    String,
    any_,
    bindparam,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.store.schema import UTCDateTime


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


# Values given to one `one_of` at a time (worker/pipeline/ingest.py picks its own sizes): each
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


def custom_plans(session: Session) -> None:
    """Plan the rest of this transaction's statements with their values (PostgreSQL).

    psycopg prepares a statement after its fifth run, and PostgreSQL may then plan it
    once for any parameters: for `subject = ANY(:array)` on an event log that has just
    been filled, that generic plan is a sequential scan (250 ms instead of 10). Only for
    the transactions that read by subject lists: planning a 2,000-id array on every
    statement of every connection slowed sweeps."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))


def batch_sized(session: Session) -> None:
    """Declare the transaction's statements bounded by a batch: PostgreSQL then compiles
    none of them (JIT).

    Each statement of an ingestion or sweep batch runs in milliseconds, while JIT compiling
    one costs 50-250 ms. PostgreSQL compiles when a plan's estimated cost passes
    jit_above_cost, and estimates made without statistics (tables autovacuum has not
    analysed yet, or never will with it off) grow with the table: on a 200,000-event store
    ingestion's payload UPDATE, 1 ms of work, was compiled for 240 ms each batch
    (bench/README.md, "Memory"). For the rest of the transaction; no result changes."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL jit = off"))


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
