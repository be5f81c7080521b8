"""Which anonymised rows stay linked to a person, and until when: read from the register alone.

A row anonymised in place keeps its key (the customer's id). When another target
keeps identifying columns by law on rows naming the same subject by the same kind of
key (the invoices, kept 10 years with the buyer's name, carry the customer's id), the
"anonymised" customer row is one join away from a name: it is pseudonymised data
(GDPR recital 26; EDPB WP216, linkability) until the activity that deletes those
rows has ended. `lethe register check` warns about it, the art. 30 register says it
for that activity, and the audit row of such an erasure records it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from worker.domain.register import Activity, Register, Rule, Target


@dataclass(frozen=True)
class Link:
    """Rows of `kept_by` (table, activity) keep `columns` while `until` (activities) lasts."""

    table: str
    kept_by: str
    columns: tuple[str, ...]
    until: tuple[str, ...]

    @property
    def ends(self) -> str:
        return " and ".join(self.until)


def _kinds(activity: Activity, target: Target) -> set[str]:
    return set(target.kinds or activity.subjects)


def _targets(register: Register) -> Iterator[tuple[Activity, Rule, Target]]:
    for activity in register.activities:
        for rule in activity.retention:
            for target in rule.targets:
                yield activity, rule, target


def links_of(register: Register, activity: Activity, target: Target) -> list[Link]:
    """The kept rows that link `target`'s anonymised rows back to their subject."""
    if not target.columns or target.delete_rows:
        return []
    kinds = _kinds(activity, target)
    found: dict[str, Link] = {}
    for other_activity, _, other in _targets(register):
        if (
            other.table == target.table
            or not other.keeps
            or other.key_value != target.key_value
            or not kinds & _kinds(other_activity, other)
        ):
            continue
        shared = kinds & _kinds(other_activity, other)
        # the activities that delete those rows in the end (crm.invoices), or else the one
        # that keeps them
        enders = tuple(
            sorted(
                {
                    a.id
                    for a, _, t in _targets(register)
                    if t.table == other.table and t.delete_rows and shared & _kinds(a, t)
                }
            )
        ) or (other_activity.id,)
        found.setdefault(
            other.table, Link(other.table, other_activity.id, tuple(other.keeps), enders)
        )
    return list(found.values())


def linked_until(register: Register, activity: Activity, target: Target) -> str | None:
    """The activities whose end makes `target`'s rows anonymous (`crm.invoices`), or None."""
    ends = sorted({end for link in links_of(register, activity, target) for end in link.until})
    return " and ".join(ends) or None


def then_text(register: Register, activity: Activity, rule: Rule) -> str:
    """The rule's end action as the art. 30 register names it."""
    if rule.then == "pseudonymise":
        return "pseudonymise (pseudonymised data, GDPR art. 4(5): still personal data)"
    if rule.then != "anonymise":
        return rule.then
    ends = sorted(
        {
            end
            for target in rule.targets
            for link in links_of(register, activity, target)
            for end in link.until
        }
    )
    if not ends:
        return rule.then
    return f"anonymise (anonymised once {' and '.join(ends)} ends; pseudonymised until then)"


def warnings(register: Register) -> Iterator[tuple[tuple, str]]:
    """(data path, message) for each anonymised target that stays linked by kept rows."""
    for a, activity in enumerate(register.activities):
        for r, rule in enumerate(activity.retention):
            if rule.then != "anonymise":
                continue
            for t, target in enumerate(rule.targets):
                for link in links_of(register, activity, target):
                    yield (
                        ("activities", a, "retention", r, "targets", t),
                        f"activity {activity.id!r}, target {target.table!r}: its rows keep "
                        f"their key {target.key!r}, and {link.table!r} rows kept by "
                        f"{link.kept_by!r} name the same person with "
                        f"{', '.join(link.columns)}: they stay pseudonymous until "
                        f"{link.ends} ends (the art. 30 register and the audit say so)",
                    )
