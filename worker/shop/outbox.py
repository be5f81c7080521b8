"""The transactional outbox in the shop database: the `lethe_outbox` table, its DDL per
database, and the claim, delete and status queries the relay and the ops commands use.

The shop inserts a row in the same transaction as the business change (an order closed),
so the event exists exactly when the change does; the relay (worker/pipeline/outbox.py)
publishes it. Columns are a contract (docs/php-shops.md): the shop's code writes them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.settings import safe_url, sqlite_file
from worker.shop.binding import shop_engine_options
from worker.store.sessions import one_of

TABLE = "lethe_outbox"

metadata = sa.MetaData()
outbox = sa.Table(
    TABLE,
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    # text, ISO 8601 with its offset: no language's naive dates slip in
    sa.Column("occurred_at", sa.String(40), nullable=False),
    sa.Column("data", sa.Text, nullable=True),
    # MATCH is a reserved word in MySQL and MariaDB: SQLAlchemy quotes it there
    sa.Column("match", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

# Written out rather than generated: a DBA reads and runs it (`lethe outbox install
# --print`), and each database needs its own default for created_at.
_DDL = {
    "postgresql": [
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id VARCHAR(200) PRIMARY KEY,
    type VARCHAR(100) NOT NULL,
    subject VARCHAR(200) NOT NULL,
    occurred_at VARCHAR(40) NOT NULL,
    data TEXT NULL,
    match TEXT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
)""",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at)",
    ],
    # InnoDB: the insert must share the shop's transaction (MyISAM has none);
    # utf8mb4: a subject id or a JSON text may hold any character.
    "mysql": [
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id VARCHAR(200) NOT NULL PRIMARY KEY,
    type VARCHAR(100) NOT NULL,
    subject VARCHAR(200) NOT NULL,
    occurred_at VARCHAR(40) NOT NULL,
    data TEXT NULL,
    `match` TEXT NULL,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY {TABLE}_created_at (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    ],
    "sqlite": [
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id VARCHAR(200) NOT NULL PRIMARY KEY,
    type VARCHAR(100) NOT NULL,
    subject VARCHAR(200) NOT NULL,
    occurred_at VARCHAR(40) NOT NULL,
    data TEXT NULL,
    "match" TEXT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)""",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_created_at ON {TABLE} (created_at)",
    ],
}

# Age of the oldest row, computed by the database from its own clock and its own
# default: no time zone of this process is involved (MySQL's TIMESTAMP is shown in the
# session's zone, SQLite's CURRENT_TIMESTAMP is UTC text).
_OLDEST_AGE = {
    "postgresql": f"SELECT count(*), extract(epoch FROM now() - min(created_at)) FROM {TABLE}",
    "mysql": "SELECT count(*), "
    f"TIMESTAMPDIFF(MICROSECOND, min(created_at), CURRENT_TIMESTAMP(6)) / 1e6 FROM {TABLE}",
    "sqlite": "SELECT count(*), "
    f"(julianday('now') - julianday(min(created_at))) * 86400.0 FROM {TABLE}",
}


class OutboxUnavailable(RuntimeError):
    """The shop database cannot be reached, or is not one the outbox supports."""


@dataclass(frozen=True)
class OutboxRow:
    id: str
    type: str
    subject: str
    occurred_at: str
    data: str | None
    match: str | None


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_seconds: float | None  # None when nothing is pending


def dialect_of(url: str) -> str:
    """`postgresql`, `mysql` (MariaDB too) or `sqlite`; OutboxUnavailable for another."""
    try:
        backend = sa.engine.make_url(url).get_backend_name()
    except sa.exc.ArgumentError:
        raise OutboxUnavailable(
            f"LETHE_SHOP_DATABASE_URL={safe_url(url)} is not a database URL"
        ) from None
    name = "mysql" if backend in ("mysql", "mariadb") else backend
    if name not in _DDL:
        raise OutboxUnavailable(
            f"the outbox supports PostgreSQL, MariaDB/MySQL and SQLite shop databases, not "
            f"{backend} ({safe_url(url)})"
        )
    return name


def ddl(url: str) -> list[str]:
    """The statements that create `lethe_outbox` in this shop database."""
    return list(_DDL[dialect_of(url)])


_engines: dict[str, Engine] = {}


def outbox_engine(url: str) -> Engine:
    """The relay's engine on the shop database (one per URL per process)."""
    dialect_of(url)
    if url not in _engines:
        # the sweep's options: on MariaDB its charset, UTC session and recycled connections
        engine = sa.create_engine(url, **shop_engine_options(url))
        if url.startswith("sqlite"):
            _sqlite_claims_write_lock(engine)
        _engines[url] = engine
    return _engines[url]


def _sqlite_claims_write_lock(engine: Engine) -> None:
    # SQLite has no row locks: a claim takes the write lock first (BEGIN IMMEDIATE), so two
    # relays take turns instead of both reading, and sending, the same rows. The shop's own
    # journal mode is left as the shop set it.
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # status and metrics only read: they must not queue behind the shop's writers
        reads = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reads else "BEGIN IMMEDIATE")


_READ_ONLY = "lethe_outbox_read_only"


def _reading(url: str) -> Any:
    return outbox_engine(url).execution_options(**{_READ_ONLY: True}).connect()


def _forget_inherited_engines() -> None:
    # a forked child (beat under the embedded worker, prefork children) must not share
    # its parent's pooled connections to the shop database
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_engines)


def _exists(url: str) -> bool:
    path = sqlite_file(url)
    # opening a missing SQLite file would create it: an empty shop is no outbox
    return path is None or path.exists()


def install(url: str) -> bool:
    """Create `lethe_outbox` (and its index) unless it exists; True when it was created."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise OutboxUnavailable(
            f"the shop database {path} does not exist: set LETHE_SHOP_DATABASE_URL to the "
            "shop's database"
        )
    engine = outbox_engine(url)
    try:
        with engine.begin() as connection:
            existed = sa.inspect(connection).has_table(TABLE)
            for statement in ddl(url):
                connection.exec_driver_sql(statement)
    except sa.exc.SQLAlchemyError as exc:
        raise OutboxUnavailable(_unreachable(url, exc)) from None
    return not existed


def has_outbox(url: str) -> bool:
    """True when the shop database holds `lethe_outbox`; False when it does not, or cannot
    be reached (the relay then waits; `lethe outbox status` says why)."""
    try:
        if not _exists(url):
            return False
        with _reading(url) as connection:
            return sa.inspect(connection).has_table(TABLE)
    except (OutboxUnavailable, sa.exc.SQLAlchemyError):
        return False


def backlog(url: str) -> Backlog:
    """How many rows wait, and how long the oldest has waited (the database's own clock)."""
    if not _exists(url):
        raise OutboxUnavailable(_no_table(url))
    try:
        with _reading(url) as connection:
            if not sa.inspect(connection).has_table(TABLE):
                raise OutboxUnavailable(_no_table(url))
            count, age = connection.exec_driver_sql(_OLDEST_AGE[dialect_of(url)]).one()
    except sa.exc.SQLAlchemyError as exc:
        raise OutboxUnavailable(_unreachable(url, exc)) from None
    return Backlog(int(count), None if not count or age is None else max(0.0, float(age)))


def skips_locked(connection: Connection) -> bool:
    """Whether the database has FOR UPDATE SKIP LOCKED: PostgreSQL, MariaDB >= 10.6,
    MySQL >= 8. Without it, a claim waits for another relay's rows: relays take turns."""
    dialect = connection.dialect
    if dialect.name == "postgresql":
        return True
    if dialect.name in ("mysql", "mariadb"):
        version = tuple(dialect.server_version_info or ())
        return version >= (10, 6) if dialect.is_mariadb else version >= (8,)
    return False  # SQLite: the claim holds the database's write lock instead


def claim(connection: Connection, limit: int) -> list[OutboxRow]:
    """The oldest `limit` rows no other relay holds, locked until the transaction ends."""
    query = (
        sa.select(
            outbox.c.id,
            outbox.c.type,
            outbox.c.subject,
            outbox.c.occurred_at,
            outbox.c.data,
            outbox.c.match,
        )
        # oldest first, as far as the index on created_at says: ties need no order (each
        # event carries its own occurred_at), and a second sort key cost a sort per claim
        .order_by(outbox.c.created_at)
        .limit(limit)
    )
    if connection.dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=skips_locked(connection))
    return [OutboxRow(*row) for row in connection.execute(query)]


def remove(connection: Connection, ids: Sequence[str]) -> None:
    """Delete the claimed rows once their events are with the broker (or set aside)."""
    if ids:
        connection.execute(outbox.delete().where(one_of(outbox.c.id, list(ids), connection)))


def _no_table(url: str) -> str:
    return (
        f"the shop database {safe_url(url)} has no {TABLE} table: create it with "
        "`lethe outbox install` (or run the DDL `lethe outbox install --print` prints)"
    )


def _unreachable(url: str, exc: Exception) -> str:
    # the type only: a driver's message may quote a statement's values
    return (
        f"cannot use the shop database {safe_url(url)} ({type(exc).__name__}): start it, or "
        "fix LETHE_SHOP_DATABASE_URL"
    )
