"""Shop coverage: per target, which of its table's rows a lifecycle covers, which none does
(those are never erased), and which are back after their erasure (a restored backup, or a
shop that wrote them again).

Every row is read once, in primary key order and in batches (worker/shop/sources.py's
keyset), and its subject looked up in the store: a lifecycle of the target's activity,
or, for a person Lethe has since forgotten (worker/sweeps/forgetting.py), an audit row
whose keyed hash is recomputed from the row's key. A row is back when that subject was
erased and the target's strategies would still change it (they are idempotent, so an
erased row is left as it is) or, for `delete_rows`, when it exists at all.

Nothing here names a subject outside the process: the result holds counts and at most
ten example primary keys per target (shop row ids), and the subjects to erase again
stay in memory for worker/sweeps/reapply.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select

from worker.domain.hashing import subject_ref
from worker.domain.register import Register
from worker.domain.strategies import Context, StrategyError, apply
from worker.settings import Settings
from worker.shop.binding import (
    BoundTarget,
    ShopUnavailable,
    bind_targets,
    shop_engine,
    unreachable,
)
from worker.shop.sources import after_keys
from worker.store.schema import Erasure, ShopCoverage, StoredLifecycle
from worker.store.sessions import ONE_OF_CHUNK, now_utc, one_of, reading, transaction

EXAMPLES = 10
_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)
# Shop rows per query: a batch's subjects are looked up in the store with one query each
# for lifecycles and the audit (ONE_OF_CHUNK keys at most).
_BATCH = ONE_OF_CHUNK
# What an erased subject's audit rows say, for a subject Lethe no longer names.
ERASED_OUTCOMES = ("erased", "reapplied")


@dataclass
class TargetCoverage:
    """One target's counts; `back_subjects` (subject -> when it was erased) stays in memory."""

    activity: str
    target: str
    table: str
    rows: int = 0
    covered: int = 0
    uncovered: int = 0
    back: int = 0
    examples: list[Any] = field(default_factory=list)
    back_subjects: dict[str, datetime] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "activity": self.activity,
            "table": self.table,
            "target": self.target,
            "rows": self.rows,
            "covered": self.covered,
            "uncovered": self.uncovered,
            "back": self.back,
            "examples": self.examples,
        }


def measure_coverage(
    settings: Settings, register: Register, *, store: bool = False
) -> list[TargetCoverage]:
    """Every target's coverage, read live; `store` keeps the counts for /metrics and the
    nightly sweep (`shop_coverage`)."""
    bound = bind_targets(
        register,
        settings.register_path,
        shop_engine(settings.shop_database_url),
        settings.secret,
        log_triggers=False,
    )
    results = scan(settings, register, bound)
    if store:
        store_coverage(settings, results)
    return results


def scan(
    settings: Settings, register: Register, bound: dict[str, list[BoundTarget]]
) -> list[TargetCoverage]:
    """Every bound target's coverage, read live (not stored)."""
    engine = shop_engine(settings.shop_database_url)
    results = []
    try:
        for activity in sorted(bound):
            subjects = register.activity(activity).subjects
            for target in bound[activity]:
                kinds = target.target.kinds or subjects
                results.append(_scan_target(settings, engine, target, kinds))
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise ShopUnavailable(unreachable(engine, exc)) from None
    return results


def _scan_target(
    settings: Settings, engine: Any, bound: BoundTarget, kinds: list[str]
) -> TargetCoverage:
    result = TargetCoverage(bound.activity, bound.name, bound.table.name)
    for batch in _row_batches(engine, bound):
        owned = [(row, subjects_of_key(bound, kinds, row[bound.target.key])) for row in batch]
        owned = [(row, c) for row, c in owned if c]
        if not owned:
            continue
        subjects = sorted({s for _, c in owned for s in c})
        lifecycles, erased = _store_facts(settings, bound, subjects)
        for row, candidates in owned:
            result.rows += 1
            subject = next((s for s in candidates if s in lifecycles), None)
            if subject is not None:
                erased_at = lifecycles[subject]
            else:
                subject = next((s for s in candidates if s in erased), None)
                erased_at = erased.get(subject) if subject else None
            if subject is None:
                result.uncovered += 1
                if len(result.examples) < EXAMPLES:
                    result.examples.append(_primary_key(bound, row))
                continue
            result.covered += 1
            if erased_at is not None and _would_change(settings, bound, row, subject):
                result.back += 1
                result.back_subjects[subject] = erased_at
    return result


def _row_batches(engine: Any, bound: BoundTarget) -> Iterator[list[dict[str, Any]]]:
    table = bound.table
    keys = [table.c[n] for n in bound.primary_key]
    names = list(dict.fromkeys([*bound.primary_key, bound.target.key, *bound.target.columns]))
    base = select(*[table.c[n] for n in names]).where(table.c[bound.target.key].is_not(None))
    if not keys:
        # no primary key to page on: one query, fetched a batch at a time
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True).execute(base)
            while rows := [dict(r) for r in result.mappings().fetchmany(_BATCH)]:
                yield rows
        return
    last: tuple | None = None
    while True:
        query = base.order_by(*keys).limit(_BATCH)
        if last is not None:
            query = query.where(after_keys(keys, last))
        with engine.connect() as connection:
            rows = [dict(r) for r in connection.execute(query).mappings()]
        if rows:
            yield rows
        if len(rows) < _BATCH:
            return
        last = tuple(rows[-1][n] for n in bound.primary_key)


def subjects_of_key(bound: BoundTarget, kinds: list[str], key: Any) -> list[str]:
    """The subjects a row's key can name under this target (one per kind for an id key)."""
    if key is None:
        return []
    text = key.rstrip(" ") if isinstance(key, str) else str(key)
    if bound.target.key_value == "subject":
        kind = text.partition(":")[0]
        return [text] if kind in kinds else []
    return [f"{kind}:{text}" for kind in kinds]


def _store_facts(
    settings: Settings, bound: BoundTarget, subjects: list[str]
) -> tuple[dict[str, datetime | None], dict[str, datetime]]:
    """(subject -> erased_at or None, for those with a lifecycle of the activity;
    subject -> last erasure in the audit, for those erased and since forgotten)."""
    secret = settings.secret
    refs = {subject_ref(secret, s): s for s in subjects}
    with reading(settings.database_url) as session:
        bind = session.get_bind()
        rows = session.execute(
            select(StoredLifecycle.subject, StoredLifecycle.state, StoredLifecycle.erased_at).where(
                StoredLifecycle.activity == bound.activity,
                one_of(StoredLifecycle.subject, subjects, bind),
            )
        )
        lifecycles = {
            s: ((at or _LONG_AGO) if state == "erased" else None) for s, state, at in rows
        }
        forgotten = [r for r, s in refs.items() if s not in lifecycles]
        erased: dict[str, datetime] = {}
        if forgotten:
            audited = session.execute(
                select(Erasure.subject_ref, sa.func.max(Erasure.erased_at))
                .where(
                    one_of(Erasure.subject_ref, forgotten, bind),
                    Erasure.activity == bound.activity,
                    Erasure.target == bound.name,
                    Erasure.outcome.in_(ERASED_OUTCOMES),
                )
                .group_by(Erasure.subject_ref)
            )
            erased = {refs[ref]: at for ref, at in audited}
    return lifecycles, erased


def _would_change(settings: Settings, bound: BoundTarget, row: dict, subject: str) -> bool:
    target = bound.target
    if target.delete_rows:
        return True
    for column, strategy in target.strategies.items():
        if strategy == "random":
            # a fresh random value each time: what it wrote cannot be told from an original,
            # so the target's other columns say whether the row is back
            continue
        value = row[column]
        facts = bound.facts[column]
        ctx = Context(settings.secret, subject, facts, target.constants.get(column))
        try:
            new = apply(strategy, value, ctx)
        except StrategyError:
            return True  # a value the strategy cannot read is no value it wrote
        if new != (value.rstrip(" ") if isinstance(value, str) else value):
            return True
    return False


def _primary_key(bound: BoundTarget, row: dict[str, Any]) -> Any:
    values = [_plain(row[n]) for n in bound.primary_key]
    return values[0] if len(values) == 1 else values


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | str) or value is None else str(value)


def store_coverage(settings: Settings, results: list[TargetCoverage]) -> None:
    """The last coverage replaces the one before (one row per target)."""
    moment = now_utc()
    with transaction(settings.database_url) as session:
        session.execute(sa.delete(ShopCoverage))
        session.add_all(
            ShopCoverage(
                activity=r.activity,
                target=r.target,
                table_name=r.table,
                rows=r.rows,
                covered=r.covered,
                uncovered=r.uncovered,
                back=r.back,
                examples=json.dumps(r.examples, default=str),
                computed_at=moment,
            )
            for r in results
        )


def stored_back(settings: Settings) -> int:
    """Rows the last coverage found back, all targets together (0 before any coverage)."""
    with reading(settings.database_url) as session:
        return session.scalar(select(sa.func.coalesce(sa.func.sum(ShopCoverage.back), 0))) or 0
