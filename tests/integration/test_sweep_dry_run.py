"""`lethe purge --dry-run` counts the rows the sweep then changes, also where two activities
reach the same rows: `crm.customers` anonymises a customer's invoices, `crm.invoices` deletes
them, and whichever falls due first decides what the other still finds."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from harness import Lethe
from sweeping import (
    NOW,
    Shop,
    build_shop,
    seed_store,
)

from worker.demo.data import DemoData

# (subject, invoice.issued, end of the relation): deadlines 10 and 5 years later
PEOPLE = [
    # both due, the invoices first
    ("customer:1", "2014-01-10T10:00:00+01:00", "2020-03-01T10:00:00+01:00"),
    # both due, the customer file first
    ("customer:2", "2015-01-10T10:00:00+01:00", "2018-03-01T10:00:00+01:00"),
    # only the invoices due
    ("customer:3", "2014-06-01T10:00:00+02:00", "2024-01-01T10:00:00+01:00"),
    # only the customer file due
    ("customer:4", "2020-01-01T10:00:00+01:00", "2019-01-01T10:00:00+01:00"),
    # an ambassador: `ambassadors` anonymises the invoices `crm.invoices` deletes
    ("ambassador:a-1", "2014-02-01T10:00:00+01:00", "2021-01-01T10:00:00+01:00"),
]
INVOICES_EACH = 2


def _shop_data() -> DemoData:
    data = DemoData()
    for n, (subject, issued, ended) in enumerate(PEOPLE, start=1):
        kind, local = subject.split(":")
        if kind == "customer":
            data.rows["customers"].append(
                {
                    "id": int(local),
                    "email": f"client{n}@example.org",
                    "first_name": "Jeanne",
                    "last_name": "Martin",
                    "phone": "+33 6 11 22 33 44",
                    "created_at": datetime(2012, 1, 1),
                }
            )
            owner: dict[str, Any] = {"customer_id": int(local)}
            data.events.append(_event(f"end-{n}", "order.closed", subject, ended))
        else:
            data.rows["ambassadors"].append(
                {"id": n, "ref": local, "display_name": "Léa", "email": f"amb{n}@example.org"}
            )
            owner = {"ambassador_ref": local}
            data.events.append(_event(f"end-{n}", "ambassador.contract_ended", subject, ended))
        data.events.append(_event(f"inv-{n}", "invoice.issued", subject, issued))
        for i in range(INVOICES_EACH):
            number = len(data.rows["invoices"]) + 1
            data.rows["invoices"].append(
                {
                    "id": number,
                    "number": f"F-{number:06d}",
                    "customer_id": None,
                    "ambassador_ref": None,
                    **owner,
                    "issued_at": date.fromisoformat(issued[:10]),
                    "billing_name": "Jeanne Martin",
                    "billing_street": f"{i + 1} rue de la Paix",
                    "billing_postcode": "75002",
                    "billing_city": "Paris",
                    "customer_email": f"client{n}@example.org",
                    "customer_phone": "+33 6 11 22 33 44",
                    "amount_excl_tax": Decimal("10.00"),
                    "vat": Decimal("2.00"),
                    "amount_incl_tax": Decimal("12.00"),
                }
            )
    return data


def _event(event_id: str, event_type: str, subject: str, at: str) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "subject": subject, "occurred_at": at}


def _small_shop(lethe: Lethe, request: pytest.FixtureRequest) -> Shop:
    if lethe.embedded:
        (lethe.home / "var").mkdir(exist_ok=True)
        url = f"sqlite:///{lethe.home / 'var' / 'shop.sqlite3'}"
    else:
        url = request.getfixturevalue("shop_postgres_url")
    lethe.env["LETHE_SHOP_DATABASE_URL"] = url
    data = _shop_data()
    build_shop(url, data)
    seed_store(lethe, data.events)
    return Shop(url, data, lethe)


@pytest.mark.parametrize("batch", ["1", "500"])
def test_the_dry_run_counts_invoices_once_when_they_are_deleted_before_being_anonymised(
    lethe: Lethe, request: pytest.FixtureRequest, batch: str
):
    lethe.env["LETHE_SWEEP_BATCH"] = batch
    shop = _small_shop(lethe, request)
    dry = shop.purge("--dry-run", "--now", NOW)
    assert dry["status"] == "dry_run"
    would = {(r["activity"], r["target"]): r["rows"] for r in dry["would_change"]}
    invoices_before = shop.rows("invoices")

    done = shop.purge_approved(NOW)
    assert done["status"] == "done" and done["failed"] == 0

    # what the audit says the sweep touched, target by target
    changed: Counter[tuple[str, str]] = Counter()
    for row in shop.audit():
        if row["run_id"] == done["run"] and row["outcome"] in ("erased", "nothing_to_erase"):
            changed[(row["activity"], row["target"])] += row["rows"]
    assert would == dict(changed)
    assert sum(would.values()) == done["rows"]
    # and what the shop shows
    invoices_after = shop.rows("invoices")
    deleted = len(invoices_before) - len(invoices_after)
    assert deleted == (
        would[("crm.invoices", "invoices[customer]")]
        + would[("crm.invoices", "invoices[ambassador]")]
    )
    assert deleted == 4 * INVOICES_EACH  # customers 1, 2 and 3, and the ambassador
    anonymised = [r for r in invoices_after.values() if r["customer_email"] is None]
    assert [r["customer_id"] for r in anonymised] == [4] * INVOICES_EACH
    customers = shop.rows("customers")
    assert would[("crm.customers", "customers")] == sum(
        1 for cid, row in customers.items() if row["email"] != f"client{cid}@example.org"
    )


def test_a_dry_run_on_the_embedded_store_leaves_its_write_lock_to_ingestion(
    embedded: Lethe, request: pytest.FixtureRequest
):
    # A dry run walks every due lifecycle against the shop, which a new register's backlog
    # makes long; meanwhile the embedded worker must go on storing the shop's events.
    from worker.domain.register_file import load_register
    from worker.settings import load_settings
    from worker.shop.binding import shop_engine
    from worker.sweeps.run import open_run, run_sweep

    shop = _small_shop(embedded, request)
    settings = load_settings(embedded.env)
    store_file = settings.database_url.removeprefix("sqlite:///")
    writes: list[str] = []

    def write_to_the_store(*_: Any) -> None:
        # what a worker storing an event does first, from another connection
        other = sqlite3.connect(store_file, timeout=1, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            writes.append("written")
        except sqlite3.OperationalError as exc:
            writes.append(str(exc))
        finally:
            other.close()

    engine = shop_engine(shop.url)
    sa.event.listen(engine, "before_cursor_execute", write_to_the_store)
    try:
        register = load_register(settings.register_path)
        run_id = open_run(settings, register, now=datetime.fromisoformat(NOW), status="dry_run")
        result = run_sweep(settings, register, run_id)
    finally:
        sa.event.remove(engine, "before_cursor_execute", write_to_the_store)
    assert result.status == "dry_run" and result.due > 0
    assert writes and set(writes) == {"written"}
