"""Sweep planning, pure: which targets a due lifecycle touches, how the audit names its rule,
whether a sweep may run without a DPO's approval, and what falls due when.

No database, no Celery: the plan (worker/sweeps/plan.py) and the erasure
(worker/sweeps/erasure.py) feed these functions rows they read and act on what they
return. A bound target (worker/shop/binding.py) is only named in annotations, never
imported at run time, so this module stays free of the database.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import pendulum

from worker.domain.register import Activity, Register, Target

if TYPE_CHECKING:
    pass

ART17 = "erasure.requested"


class DueLifecycle(NamedTuple):
    """A claimed (or counted) lifecycle: a sweep makes one per row it claims, so a tuple."""

    id: int
    subject: str
    activity: str
    anchor_at: datetime | None
    deadline_at: datetime
    # Its last erasure's time, for a lifecycle that came back after one (None for most):
    # a claim sets the run's, and a failed erasure puts this one back.
    erased_at: datetime | None = None

    @property
    def kind(self) -> str:
        return self.subject.split(":", 1)[0]


@dataclass(frozen=True)
class LoggedEvent:
    """What the sweep needs of a subject's event: no payload."""

    type: str
    occurred_at: datetime


def targets_for(activity: Activity, kind: str) -> list[Target]:
    """The targets of an activity that hold data of this subject kind."""
    return [t for rule in activity.retention for t in rule.targets if t.applies_to(kind)]


def rule_text(
    activity: Activity, lifecycle: DueLifecycle, events: Sequence[LoggedEvent], tz: Any = "UTC"
) -> str:
    """How the audit names why this lifecycle ended: the event that ended it, or the clock."""
    ends = activity.ending_events
    anchor = lifecycle.anchor_at
    shown = _iso(anchor.astimezone(_zone(tz)) if anchor is not None else None)
    enders = [
        e for e in events if e.type in ends and anchor is not None and e.occurred_at == anchor
    ]
    if any(e.type == ART17 for e in enders):
        return f"{activity.id}: {ART17} (GDPR art. 17) at {shown}"
    rule = activity.retention[0]
    if enders:
        return f"{activity.id}: ended by {enders[0].type} at {shown}, then {rule.then}"
    return f"{activity.id}: {rule.summary} (anchor {shown})"


def _zone(tz: Any) -> Any:
    return pendulum.timezone(tz) if isinstance(tz, str) else tz


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "-"


def register_digest(register: Register) -> str:
    """What the DPO approves: the register's content, not its comments or layout.

    Its sources are left out: they say where a backfill reads events, not what a sweep
    erases, so adding them asks for no new approval (a backfill's sweep does, by itself).
    """
    return hashlib.sha256(register.model_dump_json(exclude={"sources"}).encode()).hexdigest()


@dataclass(frozen=True)
class ApprovalLimits:
    """When a sweep waits for `lethe purge --approve RUN` (LETHE_SWEEP_* settings)."""

    factor: float = 10.0  # more than factor x the median of recent sweeps
    share: float = 0.5  # more than this share of a table's rows
    floor: int = 100  # below this many lifecycles (or rows), no alarm at all
    history: int = 10  # how many recent sweeps the median reads
    min_history: int = 3  # fewer sweeps than this: no median to compare with


def approval_reasons(
    due: int,
    recent_dues: Sequence[int],
    first_on_register: bool,
    table_subjects: dict[str, int],
    table_sizes: dict[str, int],
    limits: ApprovalLimits,
    backfill_since_approval: bool = False,
) -> list[str]:
    """Why this sweep must wait for a DPO's approval; empty when it may go ahead."""
    reasons = []
    if backfill_since_approval and due:
        # years of shop rows become lifecycles at once: many fall due on the first night,
        # which is the point, and exactly what a DPO must look at before it happens
        reasons.append(
            "first sweep since a backfill (`lethe backfill`) gave the shop's existing rows "
            "their lifecycles: a DPO approves what it erases"
        )
    if first_on_register:
        reasons.append(
            "first sweep with this register: a DPO approves what a new or changed register "
            "erases (after a change, `lethe recompute --dry-run` shows how stored deadlines "
            "move under it, and `lethe recompute` applies that before the sweep)"
        )
    recent = list(recent_dues)[: limits.history]
    if len(recent) >= limits.min_history and due > limits.floor:
        median = statistics.median(recent)
        if due > limits.factor * median:
            reasons.append(
                f"{due} lifecycles due, more than {limits.factor:g} x the median of the last "
                f"{len(recent)} sweeps ({median:g})"
            )
    for table, subjects in sorted(table_subjects.items()):
        size = table_sizes.get(table, 0)
        if size and subjects > limits.floor and subjects / size > limits.share:
            reasons.append(
                f"table {table}: {subjects} of its {size} rows' subjects are due "
                f"({subjects / size:.0%}, limit {limits.share:.0%})"
            )
    return reasons


def table_kinds(register: Register) -> list[tuple[str, str, str]]:
    """(table, activity, subject kind) for every kind whose rows an activity's targets change
    in a table: what the sweep's plan counts due subjects per table by (worker/sweeps/plan.py)."""
    return sorted(
        {
            (target.table, activity.id, kind)
            for activity in register.activities
            for kind in register.subject_kinds
            for target in targets_for(activity, kind)
            if target.columns or target.delete_rows
        }
    )


def forecast(rows: Iterable[tuple[str, datetime, str]], tz: Any) -> list[dict[str, Any]]:
    """Lifecycles falling due per month (in the register's zone) and activity, sorted.

    `rows` are (activity, deadline_at, then) of active lifecycles.
    """
    counts: Counter[tuple[str, str, str]] = Counter()
    for activity, deadline, then in rows:
        month = pendulum.instance(deadline).in_timezone(tz).format("YYYY-MM")
        counts[(month, activity, then)] += 1
    return [
        {"month": month, "activity": activity, "then": then, "lifecycles": n}
        for (month, activity, then), n in sorted(counts.items())
    ]
