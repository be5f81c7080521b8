"""The redelivery cap: a batch that keeps killing its worker goes to the dead letters.

With `task_reject_on_worker_lost`, a message whose worker dies is delivered
again; one that crashes the worker every time would loop forever, so after
MAX_DELIVERIES the events are set aside, kept whole for a replay.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from worker.domain.contact_details import id_is_contact_detail
from worker.store.schema import DeadLetter, Delivery
from worker.store.sessions import now_utc, transaction

MAX_DELIVERIES = 5


def too_many_deliveries(url: str, request: Any, events: list[Any]) -> bool:
    """Count a redelivery of this task; True (and events dead-lettered) past the cap."""
    delivery_info = getattr(request, "delivery_info", None) or {}
    if not delivery_info.get("redelivered"):
        return False
    now = now_utc()
    with transaction(url) as session:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(Delivery).values(task_id=request.id, attempts=2, first_seen=now)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["task_id"], set_={"attempts": Delivery.attempts + 1}
            )
        )
        attempts = session.scalar(select(Delivery.attempts).where(Delivery.task_id == request.id))
        if attempts < MAX_DELIVERIES:
            return False
        set_aside(
            session,
            events,
            f"delivered {attempts} times and never acknowledged (its worker was lost, or "
            "its broker connection dropped, each time): set aside so the queue goes on; "
            "replay with `lethe dead-letters --replay`",
        )
        session.execute(delete(Delivery).where(Delivery.task_id == request.id))
    return True


def set_aside(session: Session, events: list[Any], reason: str) -> None:
    """Keep a whole batch as dead letters with one reason, so it can be replayed."""
    now = now_utc()
    session.execute(
        DeadLetter.__table__.insert(), [dead_letter_row(e, reason, now) for e in events]
    )


def dead_letter_row(raw: Any, reason: str, now: datetime) -> dict[str, Any]:
    """A dead letter keeps the event whole (as sent) for a replay, and why it was refused."""
    payload = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    parsed = raw
    if isinstance(raw, str | bytes):
        try:  # a replayed letter comes back as its JSON text: it keeps its event id
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
    event_id = parsed.get("id") if isinstance(parsed, dict) else None
    if not isinstance(event_id, str) or id_is_contact_detail(event_id):
        event_id = None  # shown by `lethe dead-letters` and the dashboard; the payload keeps it
    return {
        "received_at": now,
        "event_id": event_id,
        "reason": reason,
        "payload": payload,
    }
