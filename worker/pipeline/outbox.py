"""The outbox relay: rows of `lethe_outbox` published through `emit_many`'s path, then deleted.

A batch is claimed (FOR UPDATE SKIP LOCKED where the database has it) in one shop
transaction that also deletes it, and that transaction commits only once the broker
has the events: a relay that dies before leaves the rows for the next one, which sends
them again (an event id sent twice is stored once). A row the register refuses goes to
Lethe's dead letters with the reason (its `match` values hashed, never as written) and
leaves the outbox, so one bad row never blocks the rows behind it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from worker.client import BrokerUnavailable, emit_many
from worker.domain.hashing import value_hash
from worker.pipeline.delivery import dead_letter_row
from worker.settings import Settings
from worker.shop.outbox import OutboxRow, claim, outbox_engine, remove
from worker.store.schema import DeadLetter
from worker.store.sessions import now_utc, transaction

# Rows per claim: emit_many's own batch (worker/client.py), one broker message each.
BATCH = 500


@dataclass
class RelayReport:
    sent: int = 0
    refused: int = 0
    batches: int = 0


def relay_batch(settings: Settings, limit: int = BATCH) -> RelayReport:
    """Claim, publish and delete one batch; an empty report when nothing waits.

    Raises BrokerUnavailable (the rows stay, for the next call) when the queue is down.
    """
    report = RelayReport()
    with outbox_engine(settings.shop_database_url).begin() as connection:
        rows = claim(connection, limit)
        if not rows:
            return report
        events: list[dict[str, Any]] = []
        refused: list[tuple[OutboxRow, str]] = []
        for row in rows:
            try:
                events.append(_as_event(row))
            except ValueError as exc:
                refused.append((row, str(exc)))
        # one broker message for the batch, as `emit_many` sends it
        sent = emit_many(events, batch_size=max(1, len(events))) if events else None
        if sent is not None:
            by_id = {row.id: row for row in rows}
            for position, reason in sent.refused:
                refused.append((by_id[events[position - 1]["id"]], reason))
            report.sent = sent.sent
        if refused:
            _set_aside(settings, refused)
        remove(connection, [row.id for row in rows])
    report.refused = len(refused)
    report.batches = 1
    return report


def relay(settings: Settings, limit: int = BATCH, most_batches: int | None = None) -> RelayReport:
    """Relay batches until the outbox is empty (or `most_batches` were sent)."""
    total = RelayReport()
    while most_batches is None or total.batches < most_batches:
        done = relay_batch(settings, limit)
        if not done.batches:
            break
        total.sent += done.sent
        total.refused += done.refused
        total.batches += 1
    return total


def _as_event(row: OutboxRow) -> dict[str, Any]:
    """An outbox row as one of `emit_many`'s dicts; ValueError says what is wrong."""
    return {
        "id": row.id,
        "type": row.type,
        "subject": row.subject,
        "occurred_at": row.occurred_at,
        "data": _json_object(row.data, "data"),
        "match": _json_object(row.match, "match"),
    }


def _json_object(text: str | None, column: str) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f"column {column} is not valid JSON ({exc.msg} at character {exc.pos}): "
            "write a JSON object, e.g. json_encode([...]) in PHP"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"column {column} must hold a JSON object, not a JSON {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean"}.get(type(value), "number or null")


def _set_aside(settings: Settings, refused: list[tuple[OutboxRow, str]]) -> None:
    now = now_utc()
    rows = [
        dead_letter_row(_kept(row, settings.secret), f"refused from the outbox: {reason}", now)
        for row, reason in refused
    ]
    with transaction(settings.database_url) as session:
        session.execute(DeadLetter.__table__.insert(), rows)


def _kept(row: OutboxRow, secret: bytes) -> dict[str, Any] | str:
    """What a dead letter keeps of a refused row: the event as the relay would have sent it,
    with `match` values as keyed hashes (`email_hash`), as the client sends them."""
    event: dict[str, Any] = {
        "id": row.id,
        "type": row.type,
        "subject": row.subject,
        "occurred_at": row.occurred_at,
    }
    try:
        data = _json_object(row.data, "data") or {}
    except ValueError:
        data = {"unreadable_data": True}
    try:
        match = _json_object(row.match, "match") or {}
    except ValueError:
        match = {}  # unreadable: nothing of it leaves the shop database
    for name, value in match.items():
        if isinstance(value, str):
            data[f"{name}_hash"] = value_hash(secret, value)
    event["data"] = data
    return event


__all__ = ["BATCH", "BrokerUnavailable", "RelayReport", "relay", "relay_batch"]
