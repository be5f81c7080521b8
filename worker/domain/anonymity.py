"""k-anonymity of erased rows: which rows a target already erased, their quasi-identifiers,
and the smallest group of rows that share them all.

Pure: rows come in as mappings. An erased row is told by the strategies' own output,
not by Lethe's store (which forgets erased people after LETHE_FORGET_AFTER_DAYS):
every column holds a value its strategy leaves as it is (a fixed point: NULL, the
constant, an `@erased.invalid` address, a first of January, a département...), and at
least one column holds a value only a sweep writes (the constant, the redaction token,
an erased address). A row that kept its quasi-identifiers exactly is singled out when
no other erased row shares them (EDPB WP216, "singling out"); k is the size of the
smallest group (Sweeney's k-anonymity), measured on what the shop really holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.domain.register import Target
from worker.domain.strategies import (
    GENERALISING,
    REDACTED,
    ColumnFacts,
    Context,
    StrategyError,
    apply,
    is_erased_email,
)

# Strategies whose output tells an erased row from a live one.
_TELLING = frozenset({"constant", "redact", "random_email"})


def quasi_identifiers(target: Target) -> list[str]:
    """What the strategies kept, coarser (year, department, amount_range), and the kept
    columns the register marks as quasi-identifiers (`quasi:`)."""
    kept = [c for c, s in target.strategies.items() if s in GENERALISING]
    return kept + [c for c in target.quasi if c not in kept]


def can_tell_erased(target: Target) -> bool:
    """Whether one of the target's columns is written with a value only a sweep writes."""
    return any(s in _TELLING for s in target.strategies.values())


def is_erased(target: Target, facts: Mapping[str, ColumnFacts], row: Mapping[str, Any]) -> bool:
    """Whether the strategies would leave this row as it is, and it holds their mark."""
    marked = False
    for column, strategy in target.strategies.items():
        value = row[column]
        if isinstance(value, str) and facts[column].padded:
            value = value.rstrip(" ")
        if strategy == "random" or value is None:
            continue  # a random value is no mark, nor can it be told from an original
        if strategy == "constant":
            if value != target.constants.get(column):
                return False
            marked = True
        elif strategy == "redact":
            if value != REDACTED:
                return False
            marked = True
        elif strategy == "random_email":
            if not is_erased_email(value):
                return False
            marked = True
        elif strategy == "null":
            return False
        else:
            try:
                if apply(strategy, value, Context(b"", "", facts[column])) != value:
                    return False
            except StrategyError:
                return False
    return marked


@dataclass(frozen=True)
class Anonymity:
    """The k-anonymity of one target's erased rows."""

    rows: int
    k_min: int | None  # None without erased rows
    below_k: int  # rows in groups smaller than k


def measure(groups: Iterable[tuple[Any, ...]], k: int) -> Anonymity:
    """k_min and rows below k over the quasi-identifier values of each erased row."""
    sizes = Counter(groups)
    rows = sum(sizes.values())
    return Anonymity(
        rows=rows,
        k_min=min(sizes.values()) if sizes else None,
        below_k=sum(n for n in sizes.values() if n < k),
    )
