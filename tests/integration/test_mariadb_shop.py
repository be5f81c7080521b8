"""A PHP shop on MariaDB, the whole story: its events in through the queue, deadlines, a
hold, a sweep approved by the DPO and one sent by beat through the worker, the audit
trail and the suppression list; on the embedded default and on Redis + PostgreSQL.

The shop is PrestaShop-shaped (tests/integration/php_shop.py): prefixed tables with no
foreign key, '' defaults, naive DATETIMEs on the shop's wall clock, zero dates, and
addresses that orders and customers share."""

from __future__ import annotations

import json
from datetime import date, datetime

from harness import Lethe, wait_for
from php_shop import LATER, NOW, ZERO, build_php_shop, write_register

from worker.domain.hashing import subject_ref

DEPARTMENTS = {"75008": "75", "20090": "2A", "97110": "971", "13001": "13"}


def _purge(lethe: Lethe, *args: str) -> dict:
    result = lethe.run("purge", "--format", "json", *args, check=False)
    assert result.returncode in (0, 4), result.stderr
    return json.loads(result.stdout)


def _suppressed(lethe: Lethe, *addresses: str) -> list[bool]:
    code = "from worker.client import is_suppressed\n"
    code += f"print(' '.join(str(is_suppressed(a)) for a in {addresses!r}))\n"
    return [word == "True" for word in lethe.python(code).stdout.split()]


def test_a_php_shop_on_mariadb_is_swept_as_its_register_says(
    lethe: Lethe, mariadb_url: str, tmp_path
):
    shop = build_php_shop(mariadb_url)
    lethe.env["LETHE_SHOP_DATABASE_URL"] = mariadb_url
    write_register(tmp_path, lethe)
    # customer 4 (due) has a dispute open; customer 6 (a recent one) asks for erasure
    shop.events += [
        {
            "id": "dispute-4",
            "type": "dispute.opened",
            "subject": "customer:4",
            "occurred_at": "2026-09-01T10:00:00+02:00",
        },
        {
            "id": "erasure-6",
            "type": "erasure.requested",
            "subject": "customer:6",
            "occurred_at": "2026-10-01T10:00:00+02:00",
        },
    ]
    lethe.start_worker()
    # the newsletter's events carry the address to match later, hashed by the client
    events = str(shop.events_file(tmp_path))
    lethe.python(
        "import json\n"
        "from worker.client import emit_many\n"
        f"sent = emit_many([json.loads(line) for line in open({events!r})])\n"
        "assert not sent.refused, sent.refused\n"
    )
    lethe.wait_stored(len(shop.events))
    checked = lethe.run("shop", "check")
    assert "4 targets over 4 tables fit the shop schema" in checked.stdout + checked.stderr

    # a hold placed by hand on another due customer
    lethe.run("hold", "place", "customer:5", "--reason", "case LIT-2026-5")
    states = {
        (r["subject"], r["activity"]): r["state"]
        for r in json.loads(lethe.run("deadlines", "--format", "json", "--now", NOW).stdout)
    }
    held = {"customer:4", "customer:5"}
    old = {f"customer:{i}" for i in range(1, 25) if i % 3}
    due_customers = (old - held) | {"customer:6"}
    left = {f"subscriber:{j}" for j in range(1, 9) if j % 2}
    assert {s for (s, a), state in states.items() if state == "due"} == due_customers | left
    assert {s for (s, a), state in states.items() if state == "held"} == held

    before = {t: shop.read(t) for t in ("ps_customer", "ps_address", "ps_orders")}
    dry = _purge(lethe, "--dry-run", "--now", NOW)
    assert dry["due"] == len(due_customers | left)
    assert shop.read("ps_customer") == before["ps_customer"], "a dry run wrote to the shop"

    first = _purge(lethe, "--now", NOW)
    assert first["status"] == "awaiting_approval"
    done = _purge(lethe, "--approve", str(first["run"]))
    assert (done["status"], done["erased"], done["failed"]) == (
        "done",
        len(due_customers | left),
        0,
    )

    customers, addresses, orders = (
        shop.read(t) for t in ("ps_customer", "ps_address", "ps_orders")
    )
    for i, row in customers.items():
        was = before["ps_customer"][i]
        if f"customer:{i}" not in due_customers:
            assert row == was, f"customer {i} was touched before its time"
            continue
        assert row["email"].startswith("h:") and row["firstname"].startswith("anon-")
        assert (row["lastname"], row["note"], row["ip_registration_newsletter"]) == (
            "[redacted]",
            None,
            None,
        )
        # untouched: what the register does not name
        assert (row["passwd"], row["date_upd"], row["newsletter"]) == (
            was["passwd"],
            was["date_upd"],
            was["newsletter"],
        )
        if isinstance(was["birthday"], date):
            assert row["birthday"] == date(was["birthday"].year, 1, 1)
        else:  # NULL, or the zero date: no date to generalise, left as it was
            assert row["birthday"] == was["birthday"]
        # a naive DATETIME is the shop's wall clock: 1 January 00:00 of its own year
        assert row["date_add"] == datetime(was["date_add"].year, 1, 1)
    assert customers[1]["date_add"] == datetime(2020, 1, 1), "2020-01-01 00:30 in Paris is 2020"
    assert customers[2]["birthday"] == "0000-00-00"

    for a, row in addresses.items():
        was = before["ps_address"][a]
        if f"customer:{row['id_customer']}" not in due_customers:
            assert row == was
            continue
        assert row["postcode"] == DEPARTMENTS[was["postcode"]]
        redacted = ("company", "lastname", "firstname", "address1", "address2", "city", "phone")
        assert all(row[c] == "[redacted]" for c in redacted), row
        assert (row["alias"], row["date_add"]) == (was["alias"], was["date_add"])

    for o, row in orders.items():
        was = before["ps_orders"][o]
        if f"customer:{row['id_customer']}" not in due_customers:
            assert row == was
            continue
        assert row["gift_message"] is None
        assert (row["reference"], row["total_paid"]) == (was["reference"], was["total_paid"])
        if was["invoice_date"] == ZERO:
            assert row["invoice_date"] == ZERO, "a zero date was taken for a real one"
        else:
            assert row["invoice_date"] == datetime(was["invoice_date"].year, 1, 1)

    subscriptions = shop.read("ps_emailsubscription")
    assert set(subscriptions) == {j for j in range(1, 9) if j % 2 == 0}
    left_addresses = [shop.emails[s] for s in sorted(left)]
    staying = [shop.emails[f"subscriber:{j}"] for j in (2, 4)]
    assert _suppressed(lethe, *left_addresses, *staying) == [True] * len(left) + [False, False]

    audit = json.loads(lethe.run("audit", "--format", "json").stdout)
    refs = {subject_ref(_secret(lethe), s): s for s in due_customers | left | held}
    assert {refs[r["subject_ref"]] for r in audit} == due_customers | left
    kept = [r for r in audit if r["outcome"] == "kept_by_law"]
    assert kept and all(r["columns"] == "reference,total_paid" for r in kept)
    trail = json.dumps(audit).lower()
    assert not any(email in trail for email in shop.emails.values())

    again = _purge(lethe, "--now", NOW)
    assert (again["status"], again["erased"]) == ("done", 0)

    # the hold is lifted; beat's nightly sweep, through the worker, erases customer 5
    lethe.run("hold", "lift", "customer:5", "--reason", "case closed")
    lethe.python(
        "from worker.app import app\n"
        f"app.send_task('lethe.sweep', kwargs={{'schedule': 'nightly-sweep', 'now': {LATER!r}}})\n"
    )
    wait_for(
        lambda: shop.read("ps_customer")[5]["email"].startswith("h:"),
        60,
        "the nightly sweep to erase customer 5",
        lethe.logs,
    )
    assert shop.read("ps_customer")[4] == before["ps_customer"][4], "a held customer was erased"
    ahead = json.loads(
        lethe.run("forecast", "--until", "2029-01-01T00:00:00+01:00", "--format", "json").stdout
    )
    assert {r["activity"] for r in ahead} == {"shop.customers"}


def _secret(lethe: Lethe) -> bytes:
    from worker.settings import load_settings

    return load_settings(lethe.env).secret
