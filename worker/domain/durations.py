"""Retention durations as a register writes them: `13 months`, `3 years`, `P2Y`, `0 days`.

Kept as calendar units (years, months, days), never as a number of seconds,
because `2020-02-29 + 5 years` must land on 2025-02-28, not on 1826 days later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import pendulum

_UNITS = {
    "year": "years",
    "years": "years",
    "an": "years",
    "ans": "years",
    "month": "months",
    "months": "months",
    "mois": "months",
    "week": "weeks",
    "weeks": "weeks",
    "day": "days",
    "days": "days",
    "jour": "days",
    "jours": "days",
}
_PART = re.compile(r"(\d+)\s*([a-zA-Z]+)")
# What may sit between the parts: `2 years 6 months`, `2 years, 6 months`, `2 years and 6 months`.
_SEPARATORS = re.compile(r"(?:[\s,+]|\band\b)*")
_ISO = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")


class DurationError(ValueError):
    """A duration the register cannot use, with what is accepted."""


@dataclass(frozen=True, order=True)
class Duration:
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0

    def after(self, moment: pendulum.DateTime) -> pendulum.DateTime:
        """`moment` plus this duration, calendar-wise in `moment`'s own time zone.

        pendulum clamps to the month's last day (31 Jan + 1 month = 28/29 Feb)
        and keeps the wall-clock time across daylight-saving changes.
        """
        return _add(self, moment, moment.tzinfo, moment.fold)

    def __str__(self) -> str:
        parts = [
            f"{n} {unit if n != 1 else unit[:-1]}"
            for n, unit in (
                (self.years, "years"),
                (self.months, "months"),
                (self.weeks, "weeks"),
                (self.days, "days"),
            )
            if n
        ]
        return " ".join(parts) or "0 days"


# The same anchors come back within a batch (a subject's activities share them) and
# across batches (its summary's latest events). Zone and fold are part of the key: equal
# instants in two zones add differently, and in one zone the two 02:30 of an autumn
# night compare equal though an hour apart. 4,096 entries, not 65,536: full, the larger
# cache held about 20 MiB of datetimes, a third of `lethe recompute`'s peak memory at
# 100,000 lifecycles (bench/memory.py).
@lru_cache(maxsize=4096)
def _add(
    duration: Duration, moment: pendulum.DateTime, zone: object, fold: int
) -> pendulum.DateTime:
    return moment.add(
        years=duration.years, months=duration.months, weeks=duration.weeks, days=duration.days
    )


def parse_duration(text: str | int) -> Duration:
    """Parse `13 months`, `5 years`, `2 years 6 months`, `P2Y`, `P1Y6M`, `0 days`."""
    if not isinstance(text, str):
        raise DurationError(
            f"duration {text!r} has no unit: write it like '13 months', '3 years' or 'P2Y'"
        )
    raw = text.strip()
    iso = _ISO.match(raw.upper())
    if iso and raw.upper() != "P":
        y, m, w, d = (int(g) if g else 0 for g in iso.groups())
        return Duration(years=y, months=m, weeks=w, days=d)
    parts = _PART.findall(raw)
    if not parts or not _SEPARATORS.fullmatch(_PART.sub(" ", raw)):
        raise DurationError(
            f"bad duration {text!r}: write a number and a unit, like '13 months', "
            "'3 years', '2 years 6 months' or ISO 8601 'P2Y'"
        )
    amounts = {"years": 0, "months": 0, "weeks": 0, "days": 0}
    for number, unit in parts:
        key = _UNITS.get(unit.lower())
        if key is None:
            raise DurationError(
                f"bad duration {text!r}: unknown unit {unit!r} (use years, months, weeks or days)"
            )
        amounts[key] += int(number)
    return Duration(**amounts)
