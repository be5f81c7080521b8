"""A PHP shop on MariaDB, for real: the code of examples/php/ run by Debian's php-cli (PDO
MySQL, curl) against a MariaDB shop database, with Lethe's relay, intake and workers on
Redis and PostgreSQL.

The stories: an order and its order.closed outbox row committed together reach the
store; a rolled-back transaction sends nothing; the intake call stores its events and
gets 401 with a wrong token; with the broker stopped while the shop keeps committing,
every event is stored once after it is back.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import CELERY, LETHE, ROOT, Lethe, OwnRedis, start_intake, wait_for
from sqlalchemy.engine import make_url

EXAMPLES = ROOT / "examples" / "php"

# A PrestaShop-like orders table: prefixed, no foreign key, NOT NULL with '' defaults,
# a naive DATETIME.
ORDERS = """CREATE TABLE ps_orders (
    id_order INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    reference VARCHAR(32) NOT NULL DEFAULT '',
    id_customer INT UNSIGNED NOT NULL,
    date_add DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


@pytest.fixture
def shop(distributed: Lethe, mariadb_url: str, php: str) -> Lethe:
    """The distributed install, its shop a MariaDB database with an orders table and the
    outbox (`lethe outbox install`)."""
    engine = sa.create_engine(mariadb_url)
    with engine.begin() as connection:
        connection.execute(sa.text(ORDERS))
    engine.dispose()
    url = make_url(mariadb_url)
    distributed.env.update(
        {
            "LETHE_SHOP_DATABASE_URL": mariadb_url,
            "LETHE_OUTBOX_EVERY": "1",
            "SHOP_DSN": f"mysql:host={url.host};port={url.port or 3306};"
            f"dbname={url.database};charset=utf8mb4",
            "SHOP_USER": url.username or "root",
            "SHOP_PASSWORD": url.password or "",
        }
    )
    distributed.run("outbox", "install")
    return distributed


def php_run(lethe: Lethe, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["php", str(EXAMPLES / script), *args],
        env=lethe.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def close_order(lethe: Lethe, reference: str, customer: int, fail: bool = False) -> None:
    result = php_run(lethe, "close_order.php", reference, str(customer), *(["fail"] * fail))
    assert result.returncode == (1 if fail else 0), result.stdout + result.stderr


def shop_count(lethe: Lethe, query: str) -> int:
    engine = sa.create_engine(lethe.env["LETHE_SHOP_DATABASE_URL"])
    with engine.connect() as connection:
        count = connection.execute(sa.text(query)).scalar_one()
    engine.dispose()
    return count


def test_an_order_and_its_event_reach_the_store_and_a_rollback_sends_nothing(shop: Lethe):
    shop.start_worker()
    shop.spawn(CELERY, "-A", "worker.app", "beat", "--loglevel=INFO", name="beat")
    close_order(shop, "A-1001", 42)
    shop.wait_event("order.closed:A-1001")
    lifecycles = [d for d in shop.deadlines() if d["subject"] == "customer:42"]
    assert {d["activity"] for d in lifecycles} >= {"sales", "crm.customers"}

    close_order(shop, "A-1002", 43, fail=True)  # the payment fails: rolled back
    close_order(shop, "A-1003", 44)
    shop.wait_event("order.closed:A-1003")
    # the relay went past where the rolled-back row would have been: nothing of it
    assert shop.store_count("events", "id = 'order.closed:A-1002'") == 0
    assert shop_count(shop, "select count(*) from ps_orders where reference = 'A-1002'") == 0
    assert shop.store_count("events") == 2
    wait_for(lambda: shop_count(shop, "select count(*) from lethe_outbox") == 0, 30, "outbox")


def test_the_intake_call_from_php_stores_its_events_and_a_wrong_token_gets_401(
    distributed: Lethe, php: str, tmp_path: Path
):
    base = start_intake(distributed)
    distributed.env["LETHE_INTAKE_URL"] = base
    distributed.start_worker()
    events = tmp_path / "events.json"
    events.write_text(
        json.dumps(
            [
                {
                    "id": "webhook-1",
                    "type": "order.closed",
                    "subject": "customer:7",
                    "occurred_at": "2026-03-01T10:00:00+01:00",
                    "data": {"order": "W-1"},
                },
                {
                    "id": "webhook-2",
                    "type": "newsletter.subscribed",
                    "subject": "customer:7",
                    "occurred_at": "2026-03-01T10:05:00+01:00",
                    "match": {"email": "jeanne.martin@example.fr"},
                },
            ]
        )
    )
    result = php_run(distributed, "send_events.php", str(events))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == {"status": 202, "answer": {"accepted": 2, "refused": []}}
    distributed.wait_event("webhook-1")
    distributed.wait_event("webhook-2")

    distributed.env["LETHE_INTAKE_TOKEN"] += "-wrong"
    result = php_run(distributed, "send_events.php", str(events))
    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == 401
    assert distributed.store_count("events") == 2


def test_orders_committed_while_the_broker_is_down_are_each_stored_once_after(
    shop: Lethe, own_redis: OwnRedis
):
    shop.env["LETHE_BROKER_URL"] = own_redis.url
    shop.start_worker()
    relay = shop.spawn(LETHE, "outbox", "relay", name="relay")
    close_order(shop, "B-0", 100)
    shop.wait_event("order.closed:B-0")

    own_redis.kill()
    references = [f"B-{n}" for n in range(1, 21)]
    for n, reference in enumerate(references, start=1):
        close_order(shop, reference, 100 + n)  # the shop goes on: its commits never wait
    assert shop_count(shop, "select count(*) from lethe_outbox") == 20
    assert relay.poll() is None, "the relay stopped with the broker"

    own_redis.start()
    shop.wait_stored(21, timeout=120)
    wait_for(lambda: shop_count(shop, "select count(*) from lethe_outbox") == 0, 60, "outbox")
    for reference in ["B-0", *references]:
        assert shop.store_count("events", "id = :id", id=f"order.closed:{reference}") == 1
    assert shop.store_count("events") == 21
    assert shop.store_count("dead_letters") == 0
