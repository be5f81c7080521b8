"""The audit trail: appending rows, reading them, exports, and a proof of erasure for one
person.

The trail never holds who a person was: a DPO who is asked "what did you do
with my data?" gives Lethe the subject, Lethe recomputes its keyed hash and
reads the rows that carry it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pendulum
from sqlalchemy import select

from worker.domain.hashing import subject_ref, subject_refs
from worker.domain.register import Register
from worker.domain.sweep_rules import ART17
from worker.store.reads import row_state
from worker.store.schema import Erasure, StoredEvent, StoredLifecycle
from worker.store.sessions import now_utc, transaction

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

COLUMNS = [
    "id",
    "run_id",
    "subject_ref",
    "activity",
    "rule",
    "target",
    "columns",
    "strategy",
    "outcome",
    "rows",
    "erased_at",
]


# What each row of a batch says, in this order; the run and the time are the batch's.
AuditRow = tuple[str, str, str, str, str, str, str, int]
_WRITTEN = tuple(c for c in COLUMNS if c not in ("id", "run_id", "erased_at"))


def append(connection: Connection, run_id: int, at: datetime, rows: list[AuditRow]) -> None:
    """Append a batch's audit rows (subject_ref, activity, rule, target, columns, strategy,
    outcome, rows), all of run `run_id` at `at`."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        common = {"run_id": run_id, "erased_at": at}
        named = [{**common, **dict(zip(_WRITTEN, r, strict=True))} for r in rows]
        connection.execute(Erasure.__table__.insert(), named)
        return
    # COPY in its text format, written by hand: the audit is a sweep's largest write, COPY
    # takes it three times faster than an INSERT, and one string per batch costs a tenth of
    # psycopg's per-value `write_row`.
    tail = f"\t{at.astimezone(UTC).isoformat()}\n"
    text = "".join(f"{run_id}\t" + "\t".join(r[:7]) + f"\t{r[7]}{tail}" for r in rows)
    if (
        "\\" in text
        or "\r" in text
        or text.count("\t") != 9 * len(rows)
        or text.count("\n") != len(rows)
    ):
        # a value holds a tab, a line break or a backslash (a note, a failure's text): only
        # then is each value escaped, as COPY reads it back unchanged
        text = "".join(
            f"{run_id}\t" + "\t".join(v.translate(_COPY_ESCAPES) for v in r[:7]) + f"\t{r[7]}{tail}"
            for r in rows
        )
    cursor = connection.connection.driver_connection.cursor()
    columns = ", ".join(("run_id", *_WRITTEN, "erased_at"))
    with cursor.copy(f"COPY erasures ({columns}) FROM STDIN") as copy:
        copy.write(text)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def audit_rows(
    url: str,
    secret: bytes,
    subject: str | None = None,
    run_id: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    query = select(Erasure).order_by(Erasure.id)
    if subject:
        # rows written before the per-purpose keys carry the legacy reference
        query = query.where(Erasure.subject_ref.in_(subject_refs(secret, subject)))
    if run_id is not None:
        query = query.where(Erasure.run_id == run_id)
    if limit:
        query = query.limit(limit)
    with transaction(url) as session:
        return [_row(e) for e in session.scalars(query)]


def _row(e: Erasure) -> dict[str, Any]:
    return {
        "id": e.id,
        "run_id": e.run_id,
        "subject_ref": e.subject_ref,
        "activity": e.activity,
        "rule": e.rule,
        "target": e.target,
        "columns": e.columns,
        "strategy": e.strategy,
        "outcome": e.outcome,
        "rows": e.rows,
        "erased_at": e.erased_at.isoformat(),
    }


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def proof(url: str, secret: bytes, subject: str, register: Register) -> dict[str, Any]:
    """What became of one person's data: erased, kept by law (until when), still pending.

    The digest covers the audit rows shown, so a proof handed to the person can
    later be matched against the trail. Once the store has forgotten the person
    (worker/sweeps/forgetting.py) it answers from those rows alone, and says so.
    """
    rows = audit_rows(url, secret, subject=subject)
    with transaction(url) as session:
        requests = list(
            session.scalars(
                select(StoredEvent.occurred_at)
                .where(StoredEvent.subject == subject, StoredEvent.type == ART17)
                .order_by(StoredEvent.occurred_at)
            )
        )
        lifecycles = list(
            session.execute(
                select(
                    StoredLifecycle.activity,
                    StoredLifecycle.state,
                    StoredLifecycle.deadline_at,
                    StoredLifecycle.erased_at,
                ).where(StoredLifecycle.subject == subject)
            )
        )
    tz = register.tz
    now = now_utc()
    # LETHE_FORGET_AFTER_DAYS after the erasure, the store forgets the person's events
    # and lifecycles (worker/sweeps/forgetting.py): the audit rows are then all that is left.
    audited = {r["activity"] for r in rows if r["outcome"] in ("erased", "nothing_to_erase")}
    forgotten = bool(audited - {activity for activity, _, _, _ in lifecycles})
    asked = {*requests, *requests_named(r["rule"] for r in rows)}
    not_erased = {activity for activity, state, _, _ in lifecycles if state != "erased"}
    # Erased, then new data since (the person came back): the erasure stands, and the
    # new data is listed apart, with the erasure it came after.
    erased_before = {activity for activity, _, _, at in lifecycles if at is not None}
    erased = sorted(audited - (not_erased - erased_before))
    kept = [
        {
            "activity": r["activity"],
            "target": r["target"],
            "columns": r["columns"],
            "why": r["rule"],
        }
        for r in rows
        if r["outcome"] == "kept_by_law"
    ]
    # A failed erasure leaves its lifecycle due for the next sweep: the person is
    # told it is overdue and that it was tried, not that it is merely "active".
    failures: dict[str, dict[int, str]] = {}  # activity: {run: when}, one attempt per run
    for r in rows:
        if r["outcome"] == "failed" and r["activity"] in not_erased:
            failures.setdefault(r["activity"], {})[r["run_id"]] = r["erased_at"]
    pending = []
    for activity, state, deadline, erased_at in sorted(lifecycles):
        if state == "erased":
            continue
        entry = {
            "activity": activity,
            "state": row_state(state, deadline, now),
            "until": deadline.astimezone(tz).isoformat() if deadline else None,
        }
        if erased_at is not None:
            entry["gathered_after_erasure_of"] = erased_at.astimezone(tz).isoformat()
        if tried := failures.get(activity):
            entry["failed_attempts"] = len(tried)
            last = max(tried.values())
            entry["last_failed_at"] = pendulum.parse(last).in_timezone(tz).isoformat()
        pending.append(entry)
    canonical = json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()
    document: dict[str, Any] = {
        "subject_ref": subject_ref(secret, subject),
        "erasure_requested_at": [m.astimezone(tz).isoformat() for m in sorted(asked)],
        "erased_activities": erased,
        "kept_by_law": kept,
        "not_yet_erased": pending,
        "audit_rows": len(rows),
        "audit_digest": "sha256:" + hashlib.sha256(canonical).hexdigest(),
        "records_forgotten": forgotten,
    }
    if forgotten:
        document["note"] = FORGOTTEN_NOTE
    return document


FORGOTTEN_NOTE = (
    "Lethe deleted its own records of this person (events, lifecycle dates) "
    "LETHE_FORGET_AFTER_DAYS after the erasure, as storage limitation asks; this proof "
    "rests on the audit rows, which name an erasure request only where it ended the "
    "retention (one made after a deadline had passed is not named, and is not listed above)"
)

_NAMED_REQUEST = re.compile(rf": {re.escape(ART17)} \(GDPR art\. 17\) at (\S+)$")


def requests_named(rules: Iterable[str]) -> set[datetime]:
    """The erasure requests the audit's rules name (worker/sweep_plan.rule_text): they
    outlive the event log."""
    found: set[datetime] = set()
    for rule in rules:
        if (match := _NAMED_REQUEST.search(rule)) is not None:
            with contextlib.suppress(ValueError):
                found.add(datetime.fromisoformat(match.group(1)))
    return found
