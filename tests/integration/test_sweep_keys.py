"""Which shop rows a subject reaches: one spelling per row, and nothing a column cannot hold."""

from __future__ import annotations

from datetime import datetime

from harness import Lethe
from sweeping import (
    EARLY,
    NOW,
    make_shop,
    seed_store,
)

from worker.demo.shop import metadata


def _event(event_id: str, kind: str, subject: str, at: str) -> dict:
    return {"id": event_id, "type": kind, "subject": subject, "occurred_at": at, "data": {}}


def test_another_spelling_of_a_held_customer_does_not_reach_their_row(lethe: Lethe, request):
    shop = make_shop(lethe, request, people=40)
    seed_store(lethe, shop.data.events)
    assert shop.purge_approved(EARLY)["status"] == "done"
    customer = next(iter(shop.rows("customers").values()))
    number = customer["id"]
    held = f"customer:{number}"
    lethe.run("hold", "place", held, "--reason", "court order")
    fullwidth = "".join(chr(ord(d) + 0xFEE0) for d in str(number))  # "42" -> "４２"
    aliases = [f"customer:0{number}", f"customer:{fullwidth}", f"customer:+{number}"]
    seed_store(
        lethe,
        [
            _event(f"alias-{i}", "erasure.requested", alias, "2026-11-20T10:00:00+01:00")
            for i, alias in enumerate(aliases)
        ],
    )
    done = shop.purge_approved(NOW)
    assert done["status"] == "done" and done["failed"] == 0
    assert shop.rows("customers")[number] == customer
    # the aliases are subjects of their own with no row: audited as nothing to erase
    outcomes = {r["outcome"] for r in shop.audit() if r["target"] == "customers"}
    assert "nothing_to_erase" in outcomes


def test_a_subject_longer_than_the_key_column_reaches_no_row(lethe: Lethe, request):
    shop = make_shop(lethe, request, people=40)
    seed_store(lethe, shop.data.events)
    assert shop.purge_approved(EARLY)["status"] == "done"
    ref = "CAND-LONG-0000000001"  # 20 characters, as much as candidates.ref holds
    engine = shop.engine()
    with engine.begin() as connection:
        connection.execute(
            metadata.tables["candidates"].insert(),
            {
                "id": 900_001,
                "ref": ref,
                "first_name": "Manon",
                "last_name": "Leroy",
                "email": "manon.leroy@example.com",
                "applied_at": datetime(2026, 1, 5, 10, 0),
            },
        )
    engine.dispose()
    seed_store(
        lethe,
        [_event("long-1", "erasure.requested", f"candidate:{ref}X", "2026-11-20T10:00:00+01:00")],
    )
    done = shop.purge_approved(NOW)
    assert done["status"] == "done" and done["failed"] == 0
    assert 900_001 in shop.rows("candidates")


def test_an_address_erased_from_one_customer_can_be_erased_again_from_another(
    lethe: Lethe, request
):
    shop = make_shop(lethe, request, people=40)
    seed_store(lethe, shop.data.events)
    assert shop.purge_approved(EARLY)["status"] == "done"
    table = metadata.tables["customers"]
    address = "jeanne.reused@example.org"
    first, second = 900_001, 900_002
    row = {
        "email": address,
        "first_name": "Jeanne",
        "last_name": "Martin",
        "created_at": datetime(2020, 1, 5, 10, 0),
    }
    engine = shop.engine()
    with engine.begin() as connection:
        connection.execute(table.insert(), {**row, "id": first})
    ask = "erasure.requested"
    seed_store(lethe, [_event("ask-1", ask, f"customer:{first}", "2026-11-01T10:00:00+01:00")])
    assert shop.purge_approved("2026-11-02T03:00:00+01:00")["failed"] == 0
    # the address is free again (customers.email is UNIQUE): a new customer signs up with it
    with engine.begin() as connection:
        connection.execute(table.insert(), {**row, "id": second})
    engine.dispose()
    seed_store(lethe, [_event("ask-2", ask, f"customer:{second}", "2026-11-20T10:00:00+01:00")])
    done = shop.purge_approved(NOW)
    assert done["status"] == "done" and done["failed"] == 0
    rows = shop.rows("customers")
    written = {rows[first]["email"], rows[second]["email"]}
    assert len(written) == 2 and all(w.endswith("@erased.invalid") for w in written)
