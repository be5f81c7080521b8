"""The transactional outbox: `lethe outbox install` makes the contract's table on every shop
database, the relay (standalone, inside the embedded worker, on beat) sends each row once
through the queue and empties the outbox, refused rows become dead letters without the
raw `match`, and the backlog shows in `lethe outbox status` and /metrics."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from harness import CELERY, LETHE, Lethe, free_port, wait_for

COLUMNS = ["id", "type", "subject", "occurred_at", "data", "match", "created_at"]
EMAIL = "jeanne.martin@example.fr"


def shop_database(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        path = tmp_path / "shop.sqlite3"
        sqlite3.connect(path).close()
        return f"sqlite:///{path}"
    return request.getfixturevalue(
        {"postgresql": "shop_postgres_url", "mariadb": "mariadb_url"}[kind]
    )


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def shop_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return shop_database(request, request.param, tmp_path)


def insert_rows(url: str, rows: list[dict]) -> None:
    engine = sa.create_engine(url)
    table = sa.Table("lethe_outbox", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), rows)
    engine.dispose()


def outbox_count(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(sa.text("select count(*) from lethe_outbox")).scalar_one()
    engine.dispose()
    return count


def row(event_id: str, type_: str = "order.closed", **extra) -> dict:
    return {
        "id": event_id,
        "type": type_,
        "subject": extra.pop("subject", "customer:42"),
        "occurred_at": "2026-03-01T10:00:00+01:00",
        "data": extra.pop("data", json.dumps({"order": event_id})),
        "match": extra.pop("match", None),
    }


def test_install_creates_the_contracts_table_on_every_shop_database(embedded: Lethe, shop_url: str):
    embedded.env["LETHE_SHOP_DATABASE_URL"] = shop_url
    printed = embedded.run("outbox", "install", "--print").stdout
    assert "CREATE TABLE IF NOT EXISTS lethe_outbox" in printed
    assert outbox_count_or_none(shop_url) is None, "--print created the table"
    assert "created" in embedded.run("outbox", "install").stderr
    assert "exists" in embedded.run("outbox", "install").stderr

    engine = sa.create_engine(shop_url)
    inspector = sa.inspect(engine)
    columns = {c["name"]: c for c in inspector.get_columns("lethe_outbox")}
    assert list(columns) == COLUMNS
    assert inspector.get_pk_constraint("lethe_outbox")["constrained_columns"] == ["id"]
    lengths = {name: getattr(columns[name]["type"], "length", None) for name in COLUMNS[:4]}
    assert lengths == {"id": 200, "type": 100, "subject": 200, "occurred_at": 40}
    nullable = {name for name, column in columns.items() if column["nullable"]}
    assert nullable == {"data", "match"}
    engine.dispose()
    # the shop writes no created_at: the database's default fills it in
    insert_rows(shop_url, [row("order-1")])
    status = embedded.run("outbox", "status").stdout
    assert "pending: 1" in status
    oldest = float(status.split("oldest:")[1].split("s")[0])
    assert 0 <= oldest < 120


def outbox_count_or_none(url: str) -> int | None:
    try:
        return outbox_count(url)
    except sa.exc.SQLAlchemyError:
        return None


def queued_event_ids(lethe: Lethe) -> list[str]:
    """The ids of every event waiting in the broker's queue, as many times as they were sent."""
    prefix = lethe.env["LETHE_QUEUE_PREFIX"]
    client = redis.Redis.from_url(lethe.env["LETHE_BROKER_URL"])
    ids = []
    for message in client.lrange(f"{prefix}:{prefix}.events", 0, -1):
        body = json.loads(base64.b64decode(json.loads(message)["body"]))
        ids += [event["id"] for event in body[0][0]]
    return ids


@pytest.mark.parametrize("database", ["postgresql", "mariadb"])
def test_three_relays_at_once_send_each_row_once_and_empty_the_outbox(
    distributed: Lethe, database: str, request: pytest.FixtureRequest
):
    shop_url = shop_database(request, database, distributed.home)
    distributed.env["LETHE_SHOP_DATABASE_URL"] = shop_url
    distributed.run("outbox", "install")
    good = [row(f"order-{n}", subject=f"customer:{n}") for n in range(6000)]
    refused = [
        row("bad-type", "order.shipped"),
        row("bad-json", data="{not json"),
        row("bad-email", "newsletter.subscribed", data=None, match=json.dumps({"email": 42})),
    ]
    subscribed = row(
        "subscribed-1", "newsletter.subscribed", data=None, match=json.dumps({"email": EMAIL})
    )
    insert_rows(shop_url, [*good, *refused, subscribed])

    relays = [
        subprocess.Popen(
            [LETHE, "outbox", "relay", "--once"],
            env=distributed.env,
            cwd=distributed.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [relay.communicate(timeout=300) for relay in relays]
    assert all(relay.returncode in (0, 3) for relay in relays), outputs
    assert EMAIL not in repr(outputs)
    sent = queued_event_ids(distributed)
    # nothing consumed yet: what the three relays published is still in the queue
    assert sorted(sent) == sorted([r["id"] for r in good] + ["subscribed-1"])
    assert outbox_count(shop_url) == 0

    distributed.start_worker()
    distributed.wait_stored(len(good) + 1, timeout=120)
    assert distributed.store_count("events") == len(good) + 1
    assert distributed.store_count("dead_letters") == len(refused)
    # the address left the shop database as its keyed hash only
    for table, column in (("events", "cast(data as text)"), ("dead_letters", "payload")):
        assert distributed.store_count(table, f"{column} like :raw", raw=f"%{EMAIL}%") == 0
    assert (
        distributed.store_count(
            "events", "id = 'subscribed-1' and cast(data as text) like '%email_hash%'"
        )
        == 1
    )
    assert all(EMAIL not in log.read_text() for log in distributed.logs)
    reasons = dead_letter_reasons(distributed)
    assert all(reason.startswith("refused from the outbox: ") for reason in reasons)
    assert any("column data is not valid JSON" in reason for reason in reasons)


def dead_letter_reasons(lethe: Lethe) -> list[str]:
    rows = json.loads(lethe.run("dead-letters", "--format", "json").stdout)
    return [r["reason"] for r in rows]


def test_the_embedded_worker_relays_the_outbox_of_a_sqlite_shop(embedded: Lethe):
    shop = embedded.home / "var" / "shop.sqlite3"
    shop.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(shop).close()
    embedded.run("outbox", "install")
    embedded.start_worker()
    insert_rows(f"sqlite:///{shop}", [row("order-embedded")])
    embedded.wait_event("order-embedded", timeout=60)
    wait_for(lambda: outbox_count(f"sqlite:///{shop}") == 0, 30, "an empty outbox")


def test_beat_relays_the_outbox_of_a_mariadb_shop(distributed: Lethe, mariadb_url: str):
    distributed.env.update({"LETHE_SHOP_DATABASE_URL": mariadb_url, "LETHE_OUTBOX_EVERY": "1"})
    distributed.run("outbox", "install")
    distributed.start_worker()
    distributed.spawn(CELERY, "-A", "worker.app", "beat", "--loglevel=INFO", name="beat")
    insert_rows(mariadb_url, [row("order-beat")])
    distributed.wait_event("order-beat", timeout=60)
    wait_for(lambda: outbox_count(mariadb_url) == 0, 30, "an empty outbox")


def test_the_backlog_shows_in_status_and_metrics(distributed: Lethe, shop_postgres_url: str):
    shop_url = shop_postgres_url
    distributed.env["LETHE_SHOP_DATABASE_URL"] = shop_url
    no_table = distributed.run("outbox", "relay", "--once", check=False)
    assert no_table.returncode == 1 and "lethe outbox install" in no_table.stderr
    distributed.run("outbox", "install")
    insert_rows(shop_url, [row(f"order-{n}") for n in range(3)])
    assert "pending: 3" in distributed.run("outbox", "status").stdout

    token = f"token-{uuid.uuid4().hex}"
    distributed.env["LETHE_DASHBOARD_TOKEN"] = token
    port = free_port()
    distributed.spawn(LETHE, "dashboard", "--port", str(port), name="dashboard")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base + "/healthz"), 30, "the dashboard", distributed.logs)
    metrics = _get(base + "/metrics", token)
    assert "lethe_outbox_pending 3.0" in metrics
    oldest = [line for line in metrics.splitlines() if line.startswith("lethe_outbox_oldest")]
    assert oldest and float(oldest[0].split()[1]) >= 0
    assert 'data-testid="outbox-pending">3<' in _get(base + "/", token)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


def _get(url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()
