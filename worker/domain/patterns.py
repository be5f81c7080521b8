"""A target column's `pattern:` (the shop application's own rule for it, e.g. PrestaShop's
`Validate::isCustomerName`): a strategy whose output would fail it is refused before a
sweep, since the shop's next save of the anonymised row would otherwise be refused."""

from __future__ import annotations

import re
from dataclasses import replace
from decimal import Decimal
from typing import Any

from worker.domain.strategies import (
    ACCEPTS,
    STRATEGIES,
    ColumnFacts,
    Context,
    StrategyError,
    apply,
)

# values tried per column kind: what a strategy writes for them is matched against the rule
_PATTERN_SAMPLES: dict[str, tuple[Any, ...]] = {
    "text": ("Jeanne", "75008", "120"),
    "integer": (42,),
    "numeric": (Decimal("120.50"),),
}


def pattern_problem(
    name: str, column: ColumnFacts, pattern: str, constant: Any = None
) -> str | None:
    """Why `name`'s output on `column` may not match `pattern` (the shop application's own
    rule for the column, which its next save of the row enforces), or None.

    Tried on what the strategy writes for a few sample values: a constant or a token is
    the same for every row; random and hashed values are drawn several times.
    """
    try:
        rule = re.compile(pattern)
    except re.error as exc:
        return f"pattern {pattern!r} is not a regular expression ({exc})"
    if name not in STRATEGIES or column.kind not in ACCEPTS[name]:
        return None  # column_problem says why
    ctx = Context(b"pattern-check", "customer:1", column, constant)
    for sample in _PATTERN_SAMPLES.get(column.kind, ("x",)):
        for n in range(8):
            try:
                out = apply(name, sample, replace(ctx, subject=f"customer:{n}"))
            except StrategyError:
                continue  # not a value of this column's: no output to try
            if out is not None and rule.search(str(out)) is None:
                return (
                    f"column {column.name!r} must match {pattern} (the shop's own rule) and "
                    f"{name} writes values such as {str(out)!r} that do not: "
                    "choose a {constant: ...} that matches, random (letters only), or null"
                )
    return None
