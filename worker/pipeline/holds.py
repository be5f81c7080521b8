"""Legal holds placed by hand (`lethe hold place|lift`): a held subject is never erased.

Dispute events (`dispute.opened` / `dispute.closed`) hold through the event log
(worker/domain/retention.py); a hold placed here is kept in the `holds` table, and the
sweep checks both, so neither can be missed. Lifting a hand-placed hold gives
the lifecycles back the state the events say.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from worker.domain.contact_details import mentions_contact_details, subject_mention
from worker.domain.events import EventRefused, check_subject
from worker.domain.hashing import subject_ref
from worker.domain.register import Register
from worker.domain.retention import is_held
from worker.store.schema import Hold, StoredLifecycle
from worker.store.sessions import lock_subjects, now_utc, transaction


class HoldError(ValueError):
    """A hold request that cannot be followed; the message says why and what to do."""


def place(
    url: str,
    subject: str,
    reason: str,
    register: Register,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Hold every lifecycle of `subject` (present and future); returns the hold's id.

    `warn` (default: stderr) is told when the subject has no lifecycle yet, which is
    allowed: a hold may precede events.
    """
    _check_subject(subject, register)
    if not reason.strip():
        raise HoldError("a hold needs a reason (--reason): the audit must say why erasure stopped")
    _check_reason(reason, subject)
    now = now_utc()
    with transaction(url) as session:
        lock_subjects(session, [subject])  # beside ingestion, which reads the holds
        hold = Hold(subject=subject, reason=reason, placed_at=now)
        session.add(hold)
        session.execute(
            update(StoredLifecycle)
            .where(StoredLifecycle.subject == subject, StoredLifecycle.state == "active")
            .values(state="held", updated_at=now)
        )
        session.flush()
        hold_id = hold.id
        known = session.scalar(
            select(StoredLifecycle.id).where(StoredLifecycle.subject == subject).limit(1)
        )
    if known is None:
        # Most often a typo in the id, sometimes a hold ordered before the shop's
        # events arrived: say so, and keep the hold either way.
        (warn or _warn_on_stderr)(
            "this subject has no lifecycle yet (no event about it has been ingested): "
            "the hold is placed and will cover its lifecycles once they exist; "
            "check the subject's id if you expected some"
        )
    return hold_id


def lift(url: str, subject: str, reason: str, register: Register) -> int:
    """Lift the subject's open holds; returns how many. A dispute still open keeps it held."""
    _check_subject(subject)
    _check_reason(reason, subject)
    now = now_utc()
    with transaction(url) as session:
        # beside ingestion: a dispute's event, or a lifecycle written back as held
        lock_subjects(session, [subject])
        open_holds = list(
            session.scalars(select(Hold).where(Hold.subject == subject, Hold.lifted_at.is_(None)))
        )
        if not open_holds:
            # the subject is not repeated: messages of a command run by a script end up in
            # its logs (`lethe hold list` shows the open holds)
            raise HoldError("this subject has no hold placed by hand: nothing to lift")
        for hold in open_holds:
            hold.lifted_at = now
            hold.lift_reason = reason
        from worker.store.reads import events_of  # ingest itself reads held_by_hand

        if not is_held(events_of(session, [subject]).get(subject, []), register):
            session.execute(
                update(StoredLifecycle)
                .where(StoredLifecycle.subject == subject, StoredLifecycle.state == "held")
                .values(state="active", updated_at=now)
            )
        return len(open_holds)


def hold_rows(url: str, secret: bytes, subject: str | None = None) -> list[dict[str, Any]]:
    """Every hold placed by hand, for `lethe hold list`: the subject in clear (the CLI reads
    the store, which holds it, and `lethe hold lift` needs it) and as the keyed hash the
    dashboard and the audit show, so a hold seen there can be found here."""
    query = select(Hold).order_by(Hold.id)
    if subject:
        query = query.where(Hold.subject == subject)
    with transaction(url) as session:
        return [
            {
                "id": h.id,
                "subject": h.subject,
                "subject_ref": subject_ref(secret, h.subject),
                "reason": h.reason,
                "placed_at": h.placed_at.isoformat(),
                "lifted_at": h.lifted_at.isoformat() if h.lifted_at else None,
            }
            for h in session.scalars(query)
        ]


def shown_reason(reason: str, subject: str) -> str:
    """A reason as the dashboard shows it: the subject, e-mail addresses and phone numbers
    masked. Reasons are checked when written (`_check_reason`); this covers holds placed
    before the checks, by an older release."""
    from worker.logs import mask_personal_values  # here: it imports Celery, the CLI need not

    return subject_mention(subject).sub("[subject]", mask_personal_values(reason))


def _check_subject(subject: str, register: Register | None = None) -> None:
    try:
        check_subject(subject, register)
    except EventRefused as exc:
        raise HoldError(str(exc)) from None


def _warn_on_stderr(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _check_reason(reason: str, subject: str) -> None:
    # Reasons are stored and shown on the dashboard beside the subject's keyed hash: a case
    # number, never the person's contact details nor the subject itself, which would tie
    # the hash to the person. The value itself is not repeated in the error either.
    if mentions_contact_details(reason):
        raise HoldError(
            "the reason looks like it holds an e-mail address or phone number: it is kept "
            "and shown to ops, so name the case instead (e.g. 'case LIT-2026-3')"
        )
    if subject_mention(subject).search(reason):
        raise HoldError(
            "the reason names the subject itself: it is shown on the dashboard beside the "
            "subject's keyed hash, which it would give away, so name the case instead "
            "(e.g. 'case LIT-2026-3')"
        )
