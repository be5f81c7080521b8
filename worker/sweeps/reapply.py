"""Re-erasure: rows found back after their erasure (a restored backup) erased again with the
same strategies, each with its own audit row marked `reapplied`.

The rows come from the coverage scan (worker/sweeps/coverage.py), which finds both the
subjects the store still names and those it has forgotten (their keyed hash recomputed
from the row's key and found in the audit). The writes are the sweep's own
(worker/shop/apply.py); the strategies are idempotent, so rows of the same subject that
were not back are left as they are. `lethe purge --reapply` runs this, and the nightly
sweep does when the coverage task found rows back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from worker.domain.hashing import subject_ref
from worker.domain.register import Register
from worker.settings import Settings
from worker.shop.apply import apply_targets
from worker.shop.binding import BoundTarget, ShopUnavailable, bind_targets, shop_engine, unreachable
from worker.store import audit
from worker.store.schema import PurgeRun
from worker.store.sessions import chunks, now_utc, transaction
from worker.sweeps.coverage import scan, store_coverage
from worker.sweeps.runs import REAPPLY_SCHEDULE, new_run

# Subjects per shop transaction: as a sweep's batch, small enough that one failure rolls
# back little, large enough that the round trips do not dominate.
_BATCH = 200
REAPPLIED = "reapplied"


@dataclass(frozen=True)
class Reapplied:
    run_id: int | None
    subjects: int
    rows: int
    back_before: int


def reapply(settings: Settings, register: Register, *, since: datetime | None = None) -> Reapplied:
    """Erase again every row found back (of subjects erased at or after `since`, when
    given); returns the run that audited it (None when nothing was back)."""
    engine = shop_engine(settings.shop_database_url)
    bound = bind_targets(register, settings.register_path, engine, settings.secret)
    found = scan(settings, register, bound)
    by_name = {(b.activity, b.name): b for targets in bound.values() for b in targets}
    work: list[tuple[str, BoundTarget, datetime]] = [
        (subject, by_name[(c.activity, c.target)], erased_at)
        for c in found
        for subject, erased_at in sorted(c.back_subjects.items())
        if since is None or erased_at >= since
    ]
    back = sum(c.back for c in found)
    if not work:
        store_coverage(settings, found)
        return Reapplied(None, 0, 0, back)
    moment = now_utc()
    with transaction(settings.database_url) as session:
        run = new_run(
            register,
            schedule=REAPPLY_SCHEDULE,
            now=moment,
            moment=moment,
            due=len({s for s, _, _ in work}),
            note="re-erasure of rows back after their erasure (a restore)",
        )
        session.add(run)
        session.flush()
        run_id = run.id
    rows = 0
    for batch in chunks(work, _BATCH):
        try:
            with engine.begin() as connection:
                applied = apply_targets(connection, [(s, b) for s, b, _ in batch], settings.secret)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            _finish(settings, run_id, "failed", rows)
            raise ShopUnavailable(unreachable(engine, exc)) from None
        rows += _audit(settings, run_id, batch, applied.rows)
    _finish(settings, run_id, "done", rows, subjects=len({s for s, _, _ in work}))
    store_coverage(settings, scan(settings, register, bound))
    return Reapplied(run_id, len({s for s, _, _ in work}), rows, back)


def _audit(settings, run_id, batch, counted) -> int:
    rows: list[audit.AuditRow] = []
    for subject, bound, erased_at in batch:
        columns, strategy = bound.audit_text
        n = counted.get((subject, bound.activity, bound.name), 0)
        rule = (
            f"{bound.activity}: erased again, its rows were back after the erasure "
            f"of {erased_at.isoformat()} (a restore)"
        )
        ref = subject_ref(settings.secret, subject)
        rows.append((ref, bound.activity, rule, bound.name, columns, strategy, REAPPLIED, n))
    with transaction(settings.database_url) as session:
        audit.append(session.connection(), run_id, now_utc(), rows)
    return sum(r[7] for r in rows)


def _finish(settings, run_id, status, rows, subjects: int = 0) -> None:
    with transaction(settings.database_url) as session:
        run = session.get(PurgeRun, run_id)
        run.status = status
        run.finished_at = now_utc()
        run.rows = rows
        run.erased = subjects
        run.parts_done = 1
