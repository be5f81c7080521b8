"""The plan's counts are made by the store (a first sweep may find millions due), and they
are what reading every due lifecycle and counting in Python would give, on both stores."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker.domain.register_file import default_register_path, load_register
from worker.domain.sweep_rules import targets_for
from worker.store.migrate import upgrade
from worker.store.schema import Hold, StoredLifecycle
from worker.store.sessions import transaction
from worker.sweeps.plan import _due_counts

NOW = datetime(2026, 11, 26, 2, tzinfo=UTC)
PAST, LATER = NOW - timedelta(days=3), NOW + timedelta(days=3)
ROWS = [
    # subject, activity, deadline, state
    ("customer:1", "crm.customers", PAST, "active"),
    ("customer:1", "sales", PAST, "active"),
    ("customer:1", "crm.invoices", LATER, "active"),
    ("customer:2", "crm.customers", PAST, "active"),
    ("customer:3", "crm.customers", PAST, "erased"),
    ("customer:4", "crm.customers", PAST, "held"),
    ("customer:5", "crm.customers", PAST, "active"),  # held by hand below
    ("ambassador:a-1", "ambassadors", PAST, "active"),
    ("ambassador:a-1", "crm.invoices", PAST, "active"),
    ("distributor-customer:DN:7", "distributors.orders", PAST, "active"),
    ("visitor:v-1", "website.navigation", PAST, "active"),
    ("visitor:v-1", "newsletter", None, "active"),
]


def expected(register) -> tuple[Counter, dict[str, int]]:
    """The oracle: every due lifecycle read and counted in Python."""
    held = {"customer:5"}
    due = [
        (a, s)
        for s, a, d, state in ROWS
        if state == "active" and d is not None and d <= NOW and s not in held
    ]
    per_table: dict[str, set[str]] = defaultdict(set)
    for activity_id, subject in due:
        for target in targets_for(register.activity(activity_id), subject.split(":", 1)[0]):
            if target.columns or target.delete_rows:
                per_table[target.table].add(subject)
    return Counter(a for a, _ in due), {t: len(s) for t, s in per_table.items()}


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_due_counts_per_activity_and_table_match_reading_every_lifecycle(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'store.db'}"
        if store == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade(url)
    register = load_register(default_register_path())
    with transaction(url) as session:
        session.execute(
            sa.insert(StoredLifecycle),
            [
                {
                    "subject": s,
                    "activity": a,
                    "anchor_at": PAST,
                    "deadline_at": d,
                    "state": state,
                    "then": "anonymise",
                    "updated_at": NOW,
                }
                for s, a, d, state in ROWS
            ],
        )
        session.add(Hold(subject="customer:5", reason="case 12", placed_at=NOW))
    with transaction(url) as session:
        per_activity, per_table = _due_counts(session, NOW, register)
    want_activity, want_table = expected(register)
    assert per_activity == want_activity
    assert per_table == want_table
    # the cases that matter are there: held, erased and not-yet-due lifecycles left out;
    # ambassador:a-1 reaches invoices through two activities and counts once
    assert per_activity["crm.customers"] == 2
    assert per_table["invoices"] == 3  # customer:1, customer:2, ambassador:a-1
    assert per_table["distributor_orders"] == 1


def test_many_activities_are_counted_in_groups_that_never_split_a_table() -> None:
    from worker.sweeps.plan import _by_table

    rows = [(f"t{t}", f"a{a}", None) for t in range(30) for a in range(25)]
    groups = list(_by_table(rows, 400))
    assert [row for group in groups for row in group] == rows
    assert all(len(group) <= 400 for group in groups)
    tables = [{row[0] for row in group} for group in groups]
    assert all(a.isdisjoint(b) for i, a in enumerate(tables) for b in tables[i + 1 :])
