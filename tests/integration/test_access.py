"""`lethe access SUBJECT` (GDPR art. 15): the register's purposes and bases, the lifecycle,
the erasures done and the shop's live rows about one person, never logged."""

from __future__ import annotations

import json

import pytest
from harness import Lethe
from shop_history import shop_url_for
from sweeping import (
    NOW,
    Shop,
    build_shop,
    seed_store,
)

from worker.demo.data import generate


def _access(lethe: Lethe, *args: str) -> tuple[dict, str]:
    result = lethe.run("access", *args)
    return json.loads(result.stdout), result.stderr


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_a_person_gets_what_the_register_the_store_and_the_shop_hold_about_them(
    embedded: Lethe, request, kind
):
    url = shop_url_for(kind, embedded, request)
    data = generate(people=40, seed=3)
    build_shop(url, data)
    shop = Shop(url, data, embedded)
    seed_store(embedded, data.events)
    shop.purge_approved(NOW)
    featured = {p.role: p for p in data.featured}

    # someone still a customer: their order rows, read live, with the purposes and bases
    lifecycles = shop.lifecycles()
    active = next(
        s for (s, a), r in sorted(lifecycles.items()) if a == "sales" and r["state"] == "active"
    )
    report, stderr = _access(embedded, active)
    assert active not in stderr
    sales = next(a for a in report["activities"] if a["activity"] == "sales")
    assert sales["lifecycle"]["state"] == "active" and sales["lifecycle"]["deadline_at"]
    assert sales["purposes"][0]["legal_basis"] == "contract"
    assert sales["data"] == ["Identité"]
    customer_id = int(active.split(":")[1])
    orders = [o for o in data.rows["orders"] if o["customer_id"] == customer_id]
    [rows] = [t for t in sales["shop_rows"] if t["table"] == "orders"]
    assert rows["rows"] == len(orders)
    assert sorted(v["ship_name"] for v in rows["values"]) == sorted(o["ship_name"] for o in orders)

    # someone erased: when and how, from the audit, and what is left in the shop
    erased = next(
        s
        for (s, a), r in sorted(lifecycles.items())
        if a == "crm.customers" and r["state"] == "erased"
    )
    report, _ = _access(embedded, erased)
    customers = next(a for a in report["activities"] if a["activity"] == "crm.customers")
    assert customers["lifecycle"]["state"] == "erased"
    assert {e["outcome"] for e in customers["erasures"]} >= {"erased"}
    [left] = [t for t in customers["shop_rows"] if t["table"] == "customers"]
    # what is left is what the sweep wrote: an address of no one, never the person's
    assert left["values"][0]["email"].endswith("@erased.invalid"), left
    assert left["values"][0]["first_name"] == "Anonymous", left

    # the newsletter leaver: their address is on the suppression list, matched by its hash
    leaver = featured["left the newsletter"].subject
    email = data.emails[leaver]
    report, stderr = _access(embedded, leaver, "--match", f"email={email}")
    assert report["suppression_list"] == {"email": True}
    assert email not in stderr

    # an HTML page in French and English labels, with the register's own words
    page = embedded.run("access", active, "--format", "html").stdout
    assert "Finalités et bases légales" in page and "Purposes and legal bases" in page
    assert "Gestion des ventes" in page

    # no one: said so, exit 0
    report, stderr = _access(embedded, "customer:987654")
    assert report["activities"] == []
    assert "hold no data about this subject" in stderr
    # never logged: no log file of the commands names the people asked about
    for log in (embedded.home / "var").rglob("*.log"):
        text = log.read_text(errors="replace")
        assert active not in text and email not in text
