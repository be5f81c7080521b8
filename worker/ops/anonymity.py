"""`lethe anonymity`: per anonymise target, the k-anonymity of the rows the shop holds erased.

Targets that keep columns by law (`keeps`: an invoice's buyer) are left out: their
rows stay identified until the activity that deletes them ends.

Reads the shop only (one pass over each target's table, a few columns, counted per
group of quasi-identifier values: memory grows with the groups, not the rows); the
judgement of what is erased and how rows group is pure (worker/domain/anonymity.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from worker.domain.anonymity import can_tell_erased, is_erased, measure, quasi_identifiers
from worker.domain.register import Register
from worker.settings import Settings
from worker.shop.binding import BoundTarget, ShopUnavailable, bind_targets, shop_engine, unreachable

REMEDY = (
    "generalise more: a coarser year or department, amount_range instead of the amount, "
    "or null the column (a quasi-identifier kept exactly singles people out)"
)
NO_MARK = (
    "no column is written with a value only a sweep writes (a constant, redact or "
    "random_email), so its erased rows cannot be told from live ones"
)


@dataclass(frozen=True)
class TargetAnonymity:
    table: str
    activity: str
    target: str
    quasi_identifiers: list[str]
    rows: int | None
    k_min: int | None
    below_k: int | None
    remedy: str | None


def anonymity(settings: Settings, register: Register, k: int) -> list[TargetAnonymity]:
    """Every target of an anonymise rule, in register order."""
    engine = shop_engine(settings.shop_database_url)
    bound = bind_targets(
        register, settings.register_path, engine, settings.secret, log_triggers=False
    )
    found = []
    for activity in register.activities:
        for rule in activity.retention:
            if rule.then != "anonymise":
                continue
            for target in rule.targets:
                if not target.columns or target.delete_rows or target.keeps:
                    # rows kept by law with their identifying columns (an invoice's
                    # buyer) are not anonymous at all: no k to measure
                    continue
                match = next(b for b in bound[activity.id] if b.target is target)
                found.append(_measured(engine, match, k))
    return found


def _measured(engine: sa.Engine, bound: BoundTarget, k: int) -> TargetAnonymity:
    target = bound.target
    quasi = quasi_identifiers(target)
    base: dict[str, Any] = {
        "table": target.table,
        "activity": bound.activity,
        "target": target.name,
        "quasi_identifiers": quasi,
    }
    if not can_tell_erased(target):
        return TargetAnonymity(**base, rows=None, k_min=None, below_k=None, remedy=NO_MARK)
    table = bound.table
    columns = list(dict.fromkeys([*target.strategies, *quasi]))
    query = sa.select(*(table.c[c] for c in columns))
    try:
        with engine.connect() as connection:
            rows = connection.execution_options(yield_per=5000).execute(query).mappings()
            erased = (r for r in rows if is_erased(target, bound.facts, r))
            measured = measure((tuple(r[c] for c in quasi) for r in erased), k)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise ShopUnavailable(unreachable(engine, exc)) from None
    return TargetAnonymity(
        **base,
        rows=measured.rows,
        k_min=measured.k_min,
        below_k=measured.below_k,
        remedy=REMEDY if measured.below_k else None,
    )


def as_rows(found: list[TargetAnonymity]) -> list[dict[str, Any]]:
    return [asdict(t) for t in found]
