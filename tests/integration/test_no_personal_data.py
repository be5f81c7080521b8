"""No personal data leaves through the side doors: known names, e-mail addresses and phone
numbers, sent in events (raw by a misbehaving producer, hashed by the client) and erased from
the shop by a real sweep, appear in none of the worker's logs, the dashboard's logs and pages,
/metrics, `lethe status`, the audit rows or the dead-letter reasons."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
import uuid

import sqlalchemy as sa
from harness import CELERY, LETHE, Lethe, wait_for

# Personal values of our own, beside those of the demo shop's customers.
NAME = "Jeanne-Aurore Vasquez-Lemoine"
EMAIL = "jeanne-aurore.vasquez@example.org"
PHONE = "+33 6 12 34 56 78"
PHONE_PLAIN = "0612345678"
# A name written the way catalogue names are, which no pattern can tell apart.
LOWER_NAME = "vasquez.lemoine"


def _fill_shop(url: str) -> list[str]:
    """The demo shop, in a database of its own; returns its customers' names, e-mails, phones."""
    from worker.demo.data import generate
    from worker.demo.shop import build_shop

    data = generate(people=60, seed=5)
    build_shop(url, data.rows)
    needles = []
    for row in data.rows["customers"]:
        needles += [f"{row['first_name']} {row['last_name']}", row["email"], row["phone"]]
    return needles, data.events


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_personal_values_never_reach_logs_metrics_audit_or_dead_letters(lethe: Lethe):

    shop_url = f"sqlite:///{lethe.home / 'shop.sqlite3'}"
    token = f"token-{uuid.uuid4().hex}"
    lethe.env.update({"LETHE_SHOP_DATABASE_URL": shop_url, "LETHE_DASHBOARD_TOKEN": token})
    needles, events = _fill_shop(shop_url)
    needles += [NAME, EMAIL, PHONE, PHONE_PLAIN]
    customers = [f"customer:{n}" for n in range(1, 4)]

    lethe.start_worker()
    path = lethe.home / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    lethe.run("emit", "--file", str(path))
    # The client sends only the keyed hash of what it is given through match=.
    lethe.python(
        "from worker.client import emit\n"
        f"emit('newsletter.unsubscribed', subject='customer:1', match={{'email': {EMAIL!r}}},"
        " occurred_at='2020-01-01T00:00:00+01:00', id='hashed-1')\n"
    )
    # A misbehaving producer publishes by task name, with personal data everywhere it can.
    personal = {"name": NAME, "email": EMAIL, "phone": PHONE, "note": f"call {PHONE_PLAIN}"}
    raw = [
        {
            "id": f"raw-{n}",
            "type": "order.closed",
            "subject": subject,
            "occurred_at": "2019-02-01T10:00:00+01:00",
            "data": personal,
        }
        for n, subject in enumerate(customers)
    ]
    refused = [
        {
            "id": "r-type",
            "type": EMAIL,
            "subject": "customer:1",
            "occurred_at": "2020-01-01T00:00Z",
        },
        {"id": "r-kind", "type": "order.closed", "subject": f"{EMAIL}:1", "occurred_at": "2020"},
        {"id": "r-when", "type": "order.closed", "subject": "customer:1", "occurred_at": PHONE},
        {"id": "r-name", "type": "order.closed", "subject": NAME, "occurred_at": PHONE_PLAIN},
        {
            "id": "r-field",
            "type": "order.closed",
            "subject": "customer:1",
            "occurred_at": "2020-01-01T00:00Z",
            NAME: EMAIL,
        },
        f'{{"id": "r-json", "name": "{NAME}", "phone": "{PHONE}"',
        {"id": "r-lower-type", "type": LOWER_NAME, "subject": "customer:1", "occurred_at": "2020"},
        {
            "id": "r-lower-kind",
            "type": "order.closed",
            "subject": f"{LOWER_NAME}:1",
            "occurred_at": "2020-01-01T00:00Z",
        },
        {
            "id": "r-lower-field",
            "type": "order.closed",
            "subject": "customer:1",
            "occurred_at": "2020-01-01T00:00Z",
            LOWER_NAME: "1",
        },
    ]
    lethe.python(
        f"from worker.app import app\napp.send_task('lethe.ingest', args=[{raw + refused!r}])\n"
    )
    wait_for(lambda: lethe.store_count("dead_letters") == len(refused), 30, "dead letters")
    lethe.wait_stored(len({e["id"] for e in events}) + 1 + len(raw))

    # A real sweep erases the due customers' rows from the shop and writes the audit.
    first = lethe.run("purge", "--format", "json", check=False)
    assert first.returncode == 4, first.stderr
    lethe.run("purge", "--approve", str(json.loads(first.stdout)["run"]))
    assert lethe.store_count("erasures where outcome = 'erased'") > 0

    port = _port()
    dashboard_log = lethe.home / "dashboard.log"
    dashboard = subprocess.Popen(
        [LETHE, "dashboard", "--port", str(port)],
        env=lethe.env,
        cwd=lethe.home,
        stdout=dashboard_log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        pages = []
        for path_ in ("/", "/metrics", "/audit"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path_}", headers={"Authorization": f"Bearer {token}"}
            )

            def fetch(request=request) -> bool:
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        pages.append(response.read().decode())
                    return True
                except OSError:
                    return False

            wait_for(fetch, 30, f"dashboard {path_}", [dashboard_log])
    finally:
        os.killpg(dashboard.pid, signal.SIGTERM)
        dashboard.wait(timeout=15)
    status = lethe.run("status", check=False)
    lethe.kill_workers(signal.SIGTERM)

    store = sa.create_engine(
        lethe.env.get("LETHE_DATABASE_URL") or f"sqlite:///{lethe.home / 'var' / 'lethe.sqlite3'}"
    )
    with store.connect() as connection:
        reasons = [r for (r,) in connection.execute(sa.text("SELECT reason FROM dead_letters"))]
        audit = [
            json.dumps([str(v) for v in row])
            for row in connection.execute(sa.text("SELECT * FROM erasures"))
        ]
        runs = [
            json.dumps([str(v) for v in row])
            for row in connection.execute(sa.text("SELECT * FROM purge_runs"))
        ]
    store.dispose()
    places = {
        "worker logs": "\n".join(p.read_text() for p in lethe.logs),
        "dashboard log": dashboard_log.read_text(),
        "dashboard pages and /metrics": "\n".join(pages),
        "lethe status": status.stdout + status.stderr,
        "dead-letter reasons": "\n".join(reasons),
        "audit rows": "\n".join(audit),
        "purge runs": "\n".join(runs),
    }
    assert len(reasons) == len(refused) and len(audit) > 0
    assert "lethe_lifecycles" in places["dashboard pages and /metrics"]
    assert '"event": "events ingested"' in places["worker logs"]
    leaks = [
        f"{needle!r} in {where}"
        for where, text in places.items()
        for needle in needles + customers + [LOWER_NAME]
        if needle.lower() in text.lower()
    ]
    assert not leaks, leaks
    # The reasons still say what was wrong, and where.
    assert any("unknown event type (the value sent is not repeated" in r for r in reasons)
    assert any("field occurred_at is not an ISO 8601 date-time" in r for r in reasons)
    assert any("unknown field" in r for r in reasons)


def test_a_dispute_case_that_is_an_address_is_refused_by_the_worker_too(lethe: Lethe):
    # The case id is the one payload a dispute keeps after an erasure; a producer that
    # publishes by task name skips the client's checks, so the worker checks it as well.
    lethe.start_worker()
    disputes = [
        {
            "id": f"dispute-{n}",
            "type": "dispute.opened",
            "subject": f"customer:{n}",
            "occurred_at": "2020-01-01T00:00:00+01:00",
            "data": {"case": case},
        }
        for n, case in enumerate([EMAIL, PHONE, f"Mme Vasquez, {PHONE_PLAIN}", "LIT-2026-3"])
    ]
    lethe.python(f"from worker.app import app\napp.send_task('lethe.ingest', args=[{disputes!r}])")
    lethe.wait_event("dispute-3")
    wait_for(lambda: lethe.store_count("dead_letters") == 3, 30, "dead letters", lethe.logs)
    assert lethe.store_count("events") == 1
    store = sa.create_engine(
        lethe.env.get("LETHE_DATABASE_URL") or f"sqlite:///{lethe.home / 'var' / 'lethe.sqlite3'}"
    )
    with store.connect() as connection:
        reasons = [r for (r,) in connection.execute(sa.text("SELECT reason FROM dead_letters"))]
    store.dispose()
    assert all("field data.case looks like an e-mail address or phone number" in r for r in reasons)
    shown = "\n".join(reasons) + "\n".join(p.read_text() for p in lethe.logs)
    assert EMAIL not in shown and PHONE not in shown and PHONE_PLAIN not in shown


def test_a_workers_config_shown_over_the_broker_holds_no_secret(distributed: Lethe):
    distributed.start_worker()
    shown = subprocess.run(
        [CELERY, "-A", "worker.app", "inspect", "conf", "--timeout", "10"],
        env={**distributed.env, "LETHE_SECRET": "someone-else-entirely-0123"},
        cwd=distributed.home,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "task_acks_late" in shown.stdout, shown.stdout + shown.stderr  # the worker answered
    assert distributed.env["LETHE_SECRET"] not in shown.stdout
    assert "lethe_settings" not in shown.stdout
