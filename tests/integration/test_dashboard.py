"""The retention dashboard in a real browser (Debian's Chromium, driven by Playwright) against a
store filled by real ingestion (Redis, a Celery worker, PostgreSQL) and a real sweep of a shop
database: the numbers on the page and in /metrics are the database's, the chart renders, a
wrong token is refused, and a store that is down is reported as such."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from harness import LETHE, ROOT, Lethe, wait_for

CHROMIUM = os.environ.get("LETHE_TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's hosts,
# which this closed network refuses; a fresh profile keeps runs independent.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
PARIS = ZoneInfo("Europe/Paris")
HELD_BY_HAND = "customer:5"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: ./run-tests installs Debian's chromium package"
        if os.environ.get("LETHE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def serve_dashboard(lethe: Lethe) -> tuple[subprocess.Popen, str]:
    """`lethe dashboard` as ops start it; returns the process and its base URL."""
    port = free_port()
    log = lethe.home / f"dashboard-{port}.log"
    process = subprocess.Popen(
        [LETHE, "dashboard", "--port", str(port)],
        env=lethe.env,
        cwd=lethe.home,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, f"dashboard died:\n{log.read_text()}"
        try:
            get(base + "/healthz")
            return True
        except OSError:
            return False

    wait_for(answers, 30, "the dashboard to answer", [log])
    return process, base


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


def fill_shop(url: str, people: int, seed: int):
    """The demo shop's rows in a database of its own; returns the demo data (rows and events)."""
    from worker.demo.data import generate
    from worker.demo.shop import build_shop

    data = generate(people=people, seed=seed)
    build_shop(url, data.rows)
    return data


@dataclass
class Stack:
    lethe: Lethe
    base: str
    token: str
    store: sa.Engine
    run_id: int


# The tests that read the stack share one process (run-tests: --dist loadgroup), so it is
# built once instead of once per process: a worker, a sweep and the dashboard.
ON_THE_STACK = pytest.mark.xdist_group("dashboard_stack")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_server: str, redis_server: str):
    """One Lethe on Redis + PostgreSQL, filled by a worker and swept once, with its dashboard."""
    import redis

    home = tmp_path_factory.mktemp("dashboard")
    name = f"lethe_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    store_url = f"{postgres_server.rsplit('/', 1)[0]}/{name}"
    prefix = f"lethe-test-{uuid.uuid4().hex[:10]}"
    token = f"token-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(
        {
            "LETHE_HOME": str(home / "var"),
            "LETHE_LOG_FORMAT": "json",
            "LETHE_BROKER_URL": redis_server,
            "LETHE_DATABASE_URL": store_url,
            "LETHE_SHOP_DATABASE_URL": f"sqlite:///{home / 'shop.sqlite3'}",
            "LETHE_SECRET": f"test-secret-{uuid.uuid4().hex}",
            "LETHE_QUEUE_PREFIX": prefix,
            "LETHE_DASHBOARD_TOKEN": token,
        }
    )
    lethe = Lethe(home, env)
    store = sa.create_engine(store_url)
    dashboard = None
    try:
        lethe.run("db", "upgrade")
        data = fill_shop(env["LETHE_SHOP_DATABASE_URL"], people=120, seed=11)
        events = home / "events.jsonl"
        events.write_text("".join(json.dumps(e) + "\n" for e in data.events))
        lethe.start_worker()
        lethe.run("emit", "--file", str(events))
        expected = len(lethe.simulate(events))
        lethe.wait_stored(len(data.events))
        wait_for(lambda: lethe.store_count("lifecycles") == expected, 60, "lifecycles", lethe.logs)
        # A misbehaving producer publishes by task name, skipping the client's checks.
        bad = [
            {"id": "bad-1", "type": "loyalty.joined", "subject": "customer:1", "occurred_at": "x"},
            {"id": "bad-2", "type": "order.closed", "subject": "customer:2", "occurred_at": "x"},
            "{not json",
        ]
        lethe.python(f"from worker.app import app\napp.send_task('lethe.ingest', args=[{bad!r}])")
        wait_for(lambda: lethe.store_count("dead_letters") == 3, 30, "dead letters", lethe.logs)
        lethe.run("hold", "place", HELD_BY_HAND, "--reason", "case 2026-117")
        first = lethe.run("purge", "--format", "json", check=False)
        assert first.returncode == 4, f"the first sweep should wait for approval: {first.stderr}"
        run_id = json.loads(first.stdout)["run"]
        lethe.run("purge", "--approve", str(run_id))
        dashboard, base = serve_dashboard(lethe)
        yield Stack(lethe, base, token, store, run_id)
    finally:
        if dashboard is not None:
            stop(dashboard)
        lethe.kill_workers(signal.SIGTERM)
        store.dispose()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        client = redis.Redis.from_url(redis_server)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)


def lifecycles_in_store(store: sa.Engine) -> list[tuple[str, str, datetime | None]]:
    with store.connect() as connection:
        rows = connection.execute(sa.text("SELECT activity, state, deadline_at FROM lifecycles"))
        return [(a, s, d) for a, s, d in rows]


def expected_states(rows, now: datetime) -> dict[str, Counter]:
    """Per activity, lifecycles by shown state, computed here from the raw rows."""
    states: dict[str, Counter] = {}
    for activity, state, deadline in rows:
        shown = state
        if state == "active" and deadline is not None and deadline <= now:
            shown = "due"
        states.setdefault(activity, Counter())[shown] += 1
    return states


def number(text: str) -> int:
    return int("".join(c for c in text if c.isdigit()))


def open_page(browser, url: str, **context):
    page = browser.new_page(viewport={"width": 1280, "height": 900}, **context)
    response = page.goto(url)
    return page, response


@ON_THE_STACK
def test_the_page_shows_the_databases_numbers_and_a_rendered_chart(browser, stack: Stack):
    page, response = open_page(browser, f"{stack.base}/?token={stack.token}")
    now = datetime.now(UTC)
    rows = lifecycles_in_store(stack.store)
    assert response.status == 200
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    expected = expected_states(rows, now)
    totals = sum(expected.values(), Counter())
    assert number(page.get_by_test_id("total-lifecycles").inner_text()) == len(rows)
    for state in ("active", "due", "held", "erased"):
        shown = number(page.get_by_test_id(f"total-{state}").inner_text())
        assert shown == totals[state], f"{state}: page {shown}, database {totals[state]}"
    assert totals["erased"] > 0, "the sweep erased nothing: the test proves little"
    assert totals["held"] > 0
    for activity, counts in expected.items():
        row = page.locator(f'tr[data-activity="{activity}"]')
        for state in ("active", "due", "held", "erased"):
            cell = row.locator(f'td[data-field="{state}"]').inner_text()
            assert number(cell) == counts[state], f"{activity} {state}"
    with stack.store.connect() as connection:
        letters = connection.execute(sa.text("SELECT count(*) FROM dead_letters")).scalar_one()
        run = connection.execute(
            sa.text("SELECT status, erased, failed FROM purge_runs WHERE id = :id"),
            {"id": stack.run_id},
        ).one()
    assert number(page.get_by_test_id("total-dead-letters").inner_text()) == letters == 3
    sweep = page.locator(f'table[data-testid="sweeps"] tr[data-run="{stack.run_id}"]')
    assert sweep.locator('[data-field="status"]').inner_text() == run.status == "done"
    assert number(sweep.locator('[data-field="erased"]').inner_text()) == run.erased
    assert "unknown event type (" in page.get_by_test_id("dead-letters").inner_text()

    # The chart: one bar part per (activity, month) with a deadline ahead, drawn with a size.
    chart = page.get_by_test_id("deadline-chart")
    box = chart.bounding_box()
    assert box and box["width"] > 600 and box["height"] > 150
    bars = page.locator("svg[data-testid=deadline-chart] rect.bar")
    drawn = Counter()
    for i in range(bars.count()):
        bar = bars.nth(i)
        drawn[(bar.get_attribute("data-activity"), bar.get_attribute("data-month"))] += int(
            bar.get_attribute("data-count")
        )
        assert bar.bounding_box()["height"] > 0
    local_now = now.astimezone(PARIS)
    month_numbers = (local_now.year * 12 + local_now.month - 1 + n for n in range(12))
    months = [f"{m // 12}-{m % 12 + 1:02d}" for m in month_numbers]
    ahead = Counter(
        (activity, deadline.astimezone(PARIS).strftime("%Y-%m"))
        for activity, state, deadline in rows
        if state == "active" and deadline is not None and deadline > now
    )
    assert drawn == Counter({k: n for k, n in ahead.items() if k[1] in months})
    assert sum(drawn.values()) > 0, "no deadline ahead: the chart was not exercised"


@ON_THE_STACK
def test_a_missing_or_wrong_token_gets_401_and_nothing_else(browser, stack: Stack):
    activities = {a for a, _, _ in lifecycles_in_store(stack.store)}
    for url in (f"{stack.base}/", f"{stack.base}/?token=wrong-{stack.token}"):
        page, response = open_page(browser, url)
        assert response.status == 401
        body = page.content()
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert not any(activity in body for activity in activities)
        assert "customer" not in body and "erased" not in body
        page.close()
    for path in ("/metrics", "/audit"):
        status, body = get(stack.base + path, token="wrong")
        assert status == 401 and "lethe_" not in body
    page, response = open_page(
        browser, f"{stack.base}/", extra_http_headers={"Authorization": f"Bearer {stack.token}"}
    )
    assert response.status == 200
    assert page.get_by_test_id("deadline-chart").is_visible()


@ON_THE_STACK
def test_audit_search_hashes_the_subject_and_never_shows_it_back(browser, stack: Stack):
    from worker.domain.hashing import subject_ref

    with stack.store.connect() as connection:
        erased = connection.execute(
            sa.text(
                "SELECT subject FROM lifecycles WHERE state = 'erased' "
                "AND subject LIKE 'customer:%' ORDER BY subject LIMIT 1"
            )
        ).scalar_one()
        ref = subject_ref(stack.lethe.env["LETHE_SECRET"].encode(), erased)
        recorded = connection.execute(
            sa.text("SELECT count(*) FROM erasures WHERE subject_ref = :ref"), {"ref": ref}
        ).scalar_one()
    assert recorded > 0
    page, _ = open_page(browser, f"{stack.base}/audit?token={stack.token}")
    page.get_by_test_id("subject-input").fill(erased)
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("[data-testid=search-result]")
    assert page.get_by_test_id("subject-ref").inner_text() == ref
    assert page.locator("[data-testid=audit-row]").count() == recorded
    assert erased not in page.content()
    assert page.get_by_test_id("subject-input").input_value() == ""
    page.get_by_test_id("subject-input").fill("Jeanne Martin")
    page.get_by_role("button", name="Search").click()
    assert "KIND:ID" in page.get_by_test_id("search-problem").inner_text()
    assert "Jeanne" not in page.content()
    log = "".join(p.read_text() for p in stack.lethe.home.glob("dashboard-*.log"))
    assert erased not in log and stack.token not in log


@ON_THE_STACK
def test_metrics_are_the_databases_figures(stack: Stack):
    from prometheus_client.parser import text_string_to_metric_families

    status, body = get(f"{stack.base}/metrics", stack.token)
    now = datetime.now(UTC)
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("lethe_store_up", ())] == 1
    for activity, counts in expected_states(lifecycles_in_store(stack.store), now).items():
        for state in ("active", "due", "held", "erased"):
            key = ("lethe_lifecycles", (("activity", activity), ("state", state)))
            assert samples[key] == counts[state], key
    with stack.store.connect() as connection:
        by_type = dict(
            connection.execute(sa.text("SELECT type, count(*) FROM events GROUP BY 1")).all()
        )
        erasures = connection.execute(
            sa.text("SELECT activity, outcome, count(*) FROM erasures GROUP BY 1, 2")
        ).all()
    for event_type, count in by_type.items():
        assert samples[("lethe_events_ingested", (("type", event_type),))] == count
    assert samples[("lethe_events_refused", (("type", "unknown"),))] == 1
    assert samples[("lethe_events_refused", (("type", "order.closed"),))] == 1
    assert samples[("lethe_events_refused", (("type", "unparsable"),))] == 1
    assert samples[("lethe_dead_letters", ())] == 3
    assert erasures
    for activity, outcome, count in erasures:
        key = ("lethe_erasures_total", (("activity", activity), ("outcome", outcome)))
        assert samples[key] == count
    assert samples[("lethe_sweep_duration_seconds_count", ())] == 1
    with stack.store.connect() as connection:
        took = connection.execute(
            sa.text(
                "SELECT extract(epoch FROM finished_at - coalesce(approved_at, started_at)) "
                "FROM purge_runs WHERE finished_at IS NOT NULL AND status <> 'dry_run'"
            )
        ).scalar_one()
    assert samples[("lethe_sweep_duration_seconds_sum", ())] == pytest.approx(float(took))
    assert samples[("lethe_sweep_last_duration_seconds", ())] == pytest.approx(float(took))
    assert samples[("lethe_holds_active", ())] == 1


def test_a_store_that_is_down_gets_a_page_saying_so(browser, tmp_path: Path):
    token = f"token-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(
        {
            "LETHE_HOME": str(tmp_path / "var"),
            "LETHE_LOG_FORMAT": "json",
            "LETHE_BROKER_URL": "redis://127.0.0.1:6379/0",
            # nothing listens on port 1: connection refused, as when PostgreSQL is stopped
            "LETHE_DATABASE_URL": "postgresql+psycopg://lethe:s3cret-pw@127.0.0.1:1/lethe",
            "LETHE_SECRET": f"test-secret-{uuid.uuid4().hex}",
            "LETHE_DASHBOARD_TOKEN": token,
        }
    )
    lethe = Lethe(tmp_path, env)
    process, base = serve_dashboard(lethe)
    try:
        page, response = open_page(browser, f"{base}/?token={token}")
        text = page.get_by_test_id("store-unavailable").inner_text()
        assert response.status == 503
        assert "cannot be reached" in text and "LETHE_DATABASE_URL" in text
        assert "127.0.0.1:1" in text and "s3cret-pw" not in page.content()
        assert "Traceback" not in page.content()
        assert get(f"{base}/healthz")[0] == 503
        status, body = get(f"{base}/metrics", token)
        assert status == 200 and "lethe_store_up 0.0" in body
    finally:
        stop(process)


def test_the_dashboard_refuses_to_start_without_a_token(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env["LETHE_HOME"] = str(tmp_path / "var")
    result = Lethe(tmp_path, env).run("dashboard", check=False, timeout=30)
    assert result.returncode != 0
    assert "LETHE_DASHBOARD_TOKEN is not set" in result.stderr


def test_the_verdict_says_what_lethe_status_says_about_the_broker(embedded: Lethe):
    embedded.env["LETHE_DASHBOARD_TOKEN"] = token = f"token-{uuid.uuid4().hex}"
    embedded.run("db", "upgrade")
    # a fresh home where no worker ever ran: the embedded queue folder is missing
    assert "broker        DOWN" in embedded.run("status", check=False).stdout
    process, base = serve_dashboard(embedded)
    try:
        status, body = get(f"{base}/", token)
        assert status == 200
        assert "being enforced" not in body and "queue folder" in body
    finally:
        stop(process)


def test_the_verdict_says_a_store_left_behind_by_an_upgrade_is_down(distributed: Lethe):
    from alembic import command

    from worker.store.migrate import alembic_config

    distributed.env["LETHE_DASHBOARD_TOKEN"] = token = f"token-{uuid.uuid4().hex}"
    distributed.run("db", "upgrade")
    command.downgrade(alembic_config(distributed.env["LETHE_DATABASE_URL"]), "0004")
    assert "this code needs" in distributed.run("status", check=False).stdout
    process, base = serve_dashboard(distributed)
    try:
        status, body = get(f"{base}/", token)
        assert status == 200
        assert "being enforced" not in body
        assert "schema is at 0004" in body and "run `lethe db upgrade` first" in body
    finally:
        stop(process)
