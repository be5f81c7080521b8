"""Erasure receipts: what a batch deleted, written before the shop commits.

A batch commits twice: the shop (the strategies), then the store (audit rows,
suppression hashes, lifecycles marked erased). A worker killed between the two
leaves the lifecycles due again with the shop already changed. Anonymised rows
are simply anonymised again and counted again; deleted rows are gone, and so
are the addresses the suppression list needed from them. So for targets that
delete rows or feed the suppression list, the batch first commits a receipt
(lifecycle, target, rows, suppression hashes: no personal data), and the next
sweep that claims the same lifecycle reads it back instead of auditing "nothing
to erase". Receipts are dropped once the store has committed the audit rows.

Where they live: in the store on PostgreSQL; on SQLite in a file beside it,
because the batch holds the store's only write lock while it writes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from worker.store.schema import ErasureReceipt, UTCDateTime
from worker.store.sessions import ONE_OF_CHUNK, chunks, engine_for, now_utc, one_of

# A receipt matters until the next sweep claims its lifecycle again (the next night,
# or once the shop is back); older ones belong to lifecycles erased since.
KEPT = timedelta(days=90)


@dataclass(frozen=True)
class Receipt:
    deadline_at: datetime
    rows: int
    suppressed: list[tuple[str, str]]  # (hash, activity)


def receipts_url(database_url: str) -> str:
    """The store itself, or on SQLite a file beside it."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return database_url
    path = Path(url.database)
    return str(url.set(database=str(path.with_name(f"{path.stem}-receipts{path.suffix}"))))


def _engine(url: str) -> sa.Engine:
    engine = engine_for(url)
    if engine.dialect.name == "sqlite" and url not in _ready:
        ErasureReceipt.__table__.create(engine, checkfirst=True)
        _ready.add(url)
    return engine


_ready: set[str] = set()


def write(url: str, run_id: int, receipts: Sequence[tuple[int, str, Receipt]]) -> None:
    """Commit (lifecycle id, target, receipt) rows, replacing any earlier try's."""
    if not receipts:
        return
    recorded = now_utc()
    with _engine(url).begin() as connection:
        _delete(connection, sorted({lifecycle_id for lifecycle_id, _, _ in receipts}))
        if connection.dialect.name == "postgresql":
            # one statement, its rows one JSON text (as ingestion's events): an executemany
            # INSERT is a statement per row, and a batch can hold thousands
            rows = [
                {
                    "l": lifecycle_id,
                    "t": target,
                    "d": receipt.deadline_at.isoformat(),
                    "r": receipt.rows,
                    "s": json.dumps(receipt.suppressed),
                }
                for lifecycle_id, target, receipt in receipts
            ]
            connection.execute(
                _INSERT_JSON, {"rows": json.dumps(rows), "run": run_id, "at": recorded}
            )
            return
        rows = [
            {
                "lifecycle_id": lifecycle_id,
                "target": target,
                "deadline_at": receipt.deadline_at,
                "rows": receipt.rows,
                "suppressed": json.dumps(receipt.suppressed),
                "run_id": run_id,
                "recorded_at": recorded,
            }
            for lifecycle_id, target, receipt in receipts
        ]
        connection.execute(ErasureReceipt.__table__.insert(), rows)


_INSERT_JSON = sa.text(
    "INSERT INTO erasure_receipts "
    "(lifecycle_id, target, deadline_at, rows, suppressed, run_id, recorded_at) "
    "SELECT l, t, d, r, s, :run, :at FROM json_to_recordset(CAST(:rows AS json)) "
    "AS batch(l integer, t text, d timestamptz, r integer, s text)"
).bindparams(sa.bindparam("at", type_=UTCDateTime()))


def load(url: str, lifecycle_ids: Iterable[int]) -> dict[tuple[int, str], Receipt]:
    """Receipts an earlier, interrupted try left for these lifecycles."""
    ids = sorted(set(lifecycle_ids))
    table = ErasureReceipt.__table__
    found: dict[tuple[int, str], Receipt] = {}
    with _engine(url).connect() as connection:
        for chunk in chunks(ids, ONE_OF_CHUNK):
            query = sa.select(table).where(one_of(table.c.lifecycle_id, chunk, connection))
            for row in connection.execute(query):
                suppressed = [(h, a) for h, a in json.loads(row.suppressed)]
                found[(row.lifecycle_id, row.target)] = Receipt(
                    row.deadline_at, row.rows, suppressed
                )
    return found


def forget(where: str | sa.Connection, lifecycle_ids: Iterable[int]) -> None:
    """Drop the receipts of lifecycles whose audit rows are committed, or are being
    committed by `where` when it is a connection to the store that holds them."""
    ids = sorted(set(lifecycle_ids))
    if not ids:
        return
    if isinstance(where, str):
        with _engine(where).begin() as connection:
            _delete(connection, ids)
    else:
        _delete(where, ids)


def in_store(database_url: str) -> bool:
    """Whether the receipts live in the store itself (not in a file beside it)."""
    return receipts_url(database_url) == database_url


def _delete(connection: sa.Connection, ids: list[int]) -> None:
    table = ErasureReceipt.__table__
    for chunk in chunks(ids, ONE_OF_CHUNK):
        connection.execute(table.delete().where(one_of(table.c.lifecycle_id, chunk, connection)))


def prune(url: str) -> None:
    """Drop receipts older than KEPT (their lifecycles were erased since)."""
    table = ErasureReceipt.__table__
    with _engine(url).begin() as connection:
        connection.execute(table.delete().where(table.c.recorded_at < now_utc() - KEPT))
