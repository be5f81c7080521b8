"""Due lifecycles are erased in the shop's database exactly once, by the register's rules,
with the audit trail matching the shop; on the embedded default and on Redis + PostgreSQL
with the shop in its own PostgreSQL database."""

from __future__ import annotations

import json

import pytest
from harness import Lethe, wait_for
from sweeping import (
    LEGAL,
    NOW,
    make_shop,
    one_row_per_erasure,
    secret_of,
    seed_store,
)

from worker.domain.hashing import subject_ref


def _owner(invoice: dict) -> str:
    if invoice["customer_id"] is not None:
        return f"customer:{invoice['customer_id']}"
    return f"ambassador:{invoice['ambassador_ref']}"


def test_a_sweep_erases_what_is_due_once_and_keeps_what_the_law_keeps(
    lethe: Lethe, request: pytest.FixtureRequest
):
    shop = make_shop(lethe, request, people=150)
    seed_store(lethe, shop.data.events)
    before = shop.lifecycles()
    due = {k for k, r in before.items() if r["state"] == "due"}
    held = {k for k, r in before.items() if r["state"] == "held"}
    assert len(due) > 100 and held, "the demo data should make many lifecycles due and one held"
    customers_before, invoices_before = shop.rows("customers"), shop.rows("invoices")

    first = shop.purge("--now", NOW)
    assert first["exit"] == 4, first
    assert "first sweep with this register" in first["stderr"]
    assert f"lethe purge --approve {first['run']}" in first["stderr"]
    assert shop.rows("customers") == customers_before, "a sweep awaiting approval touched the shop"

    done = shop.purge("--approve", str(first["run"]))
    assert (done["status"], done["erased"], done["failed"]) == ("done", len(due), 0)
    [(note,)] = shop.store(f"SELECT note FROM purge_runs WHERE id = {first['run']}")
    assert note.startswith("approved by a DPO after it stopped: first sweep with this register")
    assert "lethe purge --approve" not in note, "the run says to approve what was approved"

    after = shop.lifecycles()
    assert {k for k, r in after.items() if r["state"] == "erased"} == due
    for key, row in before.items():
        if key not in due:
            assert after[key]["state"] == row["state"], f"{key} changed before its deadline"
    assert all(after[k]["state"] == "held" for k in held)

    customers = shop.rows("customers")
    for cid, row in customers.items():
        if (f"customer:{cid}", "crm.customers") in due:
            assert row["email"].endswith("@erased.invalid")
            assert (row["first_name"], row["last_name"]) == ("Anonymous", "Anonymous")
            assert (row["phone"], row["street"], row["city"]) == (None, None, None)
            assert (row["birth_date"].month, row["birth_date"].day) == (1, 1)
            assert len(row["postcode"]) <= 3
        else:
            assert row == customers_before[cid], f"customer {cid} was touched before its time"

    invoices = shop.rows("invoices")
    deleted = kept = 0
    for iid, old in invoices_before.items():
        owner = _owner(old)
        if (owner, "crm.invoices") in due:
            assert iid not in invoices, f"invoice {iid} outlived its 10 years"
            deleted += 1
            continue
        new = invoices[iid]
        assert {c: new[c] for c in LEGAL} == {c: old[c] for c in LEGAL}, (
            f"invoice {iid} lost legal fields"
        )
        relation_over = (owner, "crm.customers") in due or (owner, "ambassadors") in due
        assert (new["customer_email"] is None) == relation_over or old["customer_email"] is None
        kept += relation_over
    assert deleted and kept

    audit = shop.audit()
    assert set(one_row_per_erasure(audit).values()) == {1}
    refs = {subject_ref(secret_of(lethe), subject): subject for subject, _ in before}
    assert {(refs[r["subject_ref"]], r["activity"]) for r in audit} == due
    erased_customers = [r for r in audit if r["target"] == "customers" and r["outcome"] == "erased"]
    assert len(erased_customers) == sum(1 for s, a in due if a == "crm.customers")
    legal_rows = [r for r in audit if r["outcome"] == "kept_by_law"]
    assert legal_rows and all(r["columns"] == ",".join(LEGAL) for r in legal_rows)
    assert all("L123-22" in r["rule"] for r in legal_rows)
    trail = json.dumps(audit).lower()
    assert not any(email in trail for email in shop.data.emails.values())

    # The event log is personal data too: an erased subject's events keep no payload.
    erased_only = {s for s, _ in due} - {s for (s, a) in before if (s, a) not in due}
    payloads = shop.store(
        "select subject, cast(data as text) from events where type = 'visit.recorded'"
    )
    for subject, data in payloads:
        if subject in erased_only:
            assert data in ("{}", "null"), f"{subject} kept an event payload after erasure"

    again = shop.purge("--now", NOW)
    assert (again["status"], again["erased"]) == ("done", 0)
    assert len(shop.audit()) == len(audit)

    ahead = json.loads(
        lethe.run("forecast", "--until", "2031-01-01T00:00:00+01:00", "--format", "json").stdout
    )
    assert ahead and ahead == sorted(ahead, key=lambda r: (r["month"], r["activity"]))
    assert NOW[:7] <= ahead[0]["month"] and ahead[-1]["month"] <= "2031-01"
    assert {r["activity"] for r in ahead} >= {"crm.customers", "crm.invoices"}


def test_beat_ticking_twice_for_one_night_runs_one_sweep_through_the_worker(
    distributed: Lethe, request: pytest.FixtureRequest, tmp_path
):
    # Through Redis, with two parts sharing the run; on the embedded default
    # `lethe demo` sends its sweeps (and a second tick) to a real worker too.
    lethe = distributed
    shop = make_shop(lethe, request, people=60, seed=5)
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in shop.data.events) + "\n")
    lethe.env["LETHE_SWEEP_PARTS"] = "2"
    lethe.start_worker()
    lethe.run("emit", "--file", str(events))
    lethe.wait_stored(len(shop.data.events))

    def tick(now: str, **extra: object) -> None:
        lethe.python(
            "from worker.app import app\n"
            f"app.send_task('lethe.sweep', kwargs={{'schedule': 'nightly-sweep', 'now': {now!r}"
            + "".join(f", {k!r}: {v!r}" for k, v in extra.items())
            + "})\n"
        )

    def runs() -> list[tuple]:
        return shop.store("select id, status, slot_at, erased from purge_runs order by id")

    tick("2021-01-01T03:00:00+01:00")
    wait_for(lambda: runs() and runs()[0][1] == "awaiting_approval", 30, "the first sweep to stop")
    lethe.run("purge", "--approve", str(runs()[0][0]))
    tick("2026-11-26T03:00:00+01:00")
    tick("2026-11-26T03:07:00+01:00")  # a second beat, a few minutes late
    wait_for(
        lambda: len(runs()) == 2 and runs()[1][1] == "done", 30, "the nightly sweep", lethe.logs
    )
    wait_for(
        lambda: "slot already claimed" in "".join(p.read_text() for p in lethe.logs),
        15,
        "the no-op",
    )
    assert len(runs()) == 2
    due = [k for k, r in shop.lifecycles().items() if r["state"] == "due"]
    assert due == []
    assert set(one_row_per_erasure(shop.audit()).values()) == {1}

    # The daily report claims its slot too, and tells counts only.
    for at in ("2026-11-26T07:00:00+01:00", "2026-11-26T07:01:00+01:00"):
        lethe.python(
            "from worker.app import app\n"
            f"app.send_task('lethe.report', kwargs={{'schedule': 'daily-report', 'now': {at!r}}})\n"
        )
    wait_for(
        lambda: "daily retention report" in "".join(p.read_text() for p in lethe.logs),
        15,
        "the daily report",
    )
    assert shop.store("select count(*) from schedule_slots") == [(1,)]
