"""The order of a batch's work, decided once for the sweep and its dry run: rows one step
deletes are not there for a later step on the same table and key."""

from __future__ import annotations

import sqlalchemy as sa

from worker.domain.register import Register
from worker.domain.strategies import ColumnFacts
from worker.domain.sweep_rules import targets_for
from worker.shop.apply import RemovedRows, plan_steps
from worker.shop.binding import BoundTarget

_metadata = sa.MetaData()
_tables = {
    "invoices": sa.Table("invoices", _metadata, sa.Column("id", sa.Integer, primary_key=True)),
    "customers": sa.Table("customers", _metadata, sa.Column("id", sa.Integer, primary_key=True)),
}


def _bound(register: Register, activity: str, table: str) -> BoundTarget:
    [target] = [t for t in targets_for(register.activity(activity), "customer") if t.table == table]
    facts = {target.key: ColumnFacts(name=target.key, kind="integer", integer_bits=32)}
    return BoundTarget(activity, target, _tables[table], facts, ("id",))


def test_invoices_deleted_first_are_not_anonymised_after_and_the_reverse_touches_both(
    register: Register,
) -> None:
    anonymise = _bound(register, "crm.customers", "invoices")
    delete = _bound(register, "crm.invoices", "invoices")
    customers = _bound(register, "crm.customers", "customers")

    deleted_first = plan_steps(
        [("customer:1", delete), ("customer:1", customers), ("customer:1", anonymise)],
        RemovedRows(),
    )
    assert [(s.bound, s.keys) for s in deleted_first] == [
        (delete, {1: "customer:1"}),
        (customers, {1: "customer:1"}),
        (anonymise, {}),  # nothing left to anonymise, still audited for customer:1
    ]
    assert deleted_first[2].subjects == ["customer:1"]

    anonymised_first = plan_steps(
        [("customer:2", anonymise), ("customer:2", delete)], RemovedRows()
    )
    assert [s.keys for s in anonymised_first] == [{2: "customer:2"}, {2: "customer:2"}]


def test_a_dry_run_remembers_across_batches_only_rows_another_target_reads(
    register: Register,
) -> None:
    anonymise = _bound(register, "crm.customers", "invoices")
    delete = _bound(register, "crm.invoices", "invoices")
    customers = _bound(register, "crm.customers", "customers")
    removed = RemovedRows.for_targets([anonymise, delete, customers])
    assert removed.shared == {("invoices", "customer_id")}

    plan_steps([("customer:3", delete)], removed)  # an earlier batch
    [later] = plan_steps([("customer:3", anonymise), ("customer:4", anonymise)], removed)
    assert later.keys == {4: "customer:4"} and later.subjects == ["customer:3", "customer:4"]
