"""`lethe shop coverage` and its nightly task: rows no lifecycle covers are counted (and
never named), /metrics reads the task's stored counts, and rows back after an erasure are
erased again by the nightly sweep itself."""

from __future__ import annotations

import json
import re
import uuid

import sqlalchemy as sa
from harness import Lethe, wait_for
from sweeping import NOW, Shop, build_shop, seed_store
from test_dashboard import get, serve_dashboard, stop

from worker.demo.data import generate

NEXT_NIGHT = "2026-11-27T03:00:00+01:00"


def _send(lethe: Lethe, task: str, **kwargs: str) -> None:
    lethe.python(
        "from worker.app import app\n"
        f"app.send_task({task!r}, kwargs={kwargs!r})\n"
    )  # fmt: skip


def _metric(text: str, name: str, activity: str, table: str) -> float | None:
    pattern = rf'^{name}{{activity="{re.escape(activity)}",table="{re.escape(table)}"}} (\S+)$'
    found = re.search(pattern, text, re.M) or re.search(
        rf'^{name}{{table="{re.escape(table)}",activity="{re.escape(activity)}"}} (\S+)$',
        text,
        re.M,
    )
    return float(found.group(1)) if found else None


def _audit_count(lethe: Lethe, outcome: str) -> int:
    return lethe.store_count("erasures", "outcome = :o", o=outcome)


def test_uncovered_rows_are_counted_the_metrics_read_the_task_and_the_night_erases_rows_back(
    embedded: Lethe,
):
    (embedded.home / "var").mkdir(exist_ok=True)
    url = f"sqlite:///{embedded.home / 'var' / 'shop.sqlite3'}"
    embedded.env["LETHE_SHOP_DATABASE_URL"] = url
    embedded.env["LETHE_DASHBOARD_TOKEN"] = token = f"token-{uuid.uuid4().hex}"
    data = generate(people=40, seed=3, legacy=4)
    build_shop(url, data)
    shop = Shop(url, data, embedded)
    seed_store(embedded, data.events)
    legacy_ids = sorted(int(s.split(":")[1]) for s in data.legacy)

    found = json.loads(embedded.run("shop", "coverage", "--format", "json").stdout)
    [customers] = [
        r for r in found if (r["activity"], r["table"]) == ("crm.customers", "customers")
    ]
    assert customers["uncovered"] == 4 and customers["rows"] == len(data.rows["customers"])
    assert customers["covered"] == customers["rows"] - 4 and customers["back"] == 0
    assert customers["examples"] == legacy_ids
    assert "customer:" not in json.dumps(found), "no subject in clear"

    shop.purge_approved(NOW)
    embedded.start_worker()
    _send(embedded, "lethe.coverage", schedule="shop-coverage")
    wait_for(lambda: embedded.store_count("shop_coverage") > 0, 60, "the coverage task")

    # a row of an erased customer written back as it was (a restore, a shop's own write)
    erased = next(
        s
        for (s, a), r in shop.lifecycles().items()
        if a == "crm.customers" and r["state"] == "erased"
    )
    original = next(c for c in data.rows["customers"] if f"customer:{c['id']}" == erased)
    engine = shop.engine()
    with engine.begin() as connection:
        connection.execute(
            sa.text("update customers set email = :e, last_name = :n where id = :i"),
            {"e": original["email"], "n": original["last_name"], "i": original["id"]},
        )
    process, base = serve_dashboard(embedded)
    try:
        _, before = get(f"{base}/metrics", token)
        # not computed at scrape time: the task's stored counts until it runs again
        assert _metric(before, "lethe_shop_back_rows", "crm.customers", "customers") == 0
        assert _metric(before, "lethe_shop_uncovered_rows", "crm.customers", "customers") == 4
        _send(embedded, "lethe.coverage", schedule="shop-coverage")

        def back_counted() -> bool:
            _, text = get(f"{base}/metrics", token)
            return _metric(text, "lethe_shop_back_rows", "crm.customers", "customers") == 1

        wait_for(back_counted, 60, "the coverage task to count the row back")
    finally:
        stop(process)

    # the next nightly sweep erases it again by itself, audited `reapplied`
    _send(embedded, "lethe.sweep", schedule="nightly-sweep", now=NEXT_NIGHT)
    wait_for(lambda: _audit_count(embedded, "reapplied") >= 1, 120, "the re-erasure")
    with engine.connect() as connection:
        email, last_name = connection.execute(
            sa.text("select email, last_name from customers where id = :i"), {"i": original["id"]}
        ).one()
    engine.dispose()
    assert email.endswith("@erased.invalid") and last_name == "Anonymous"
    assert _audit_count(embedded, "reapplied") == 1
