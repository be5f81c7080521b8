"""Real services for integration tests: a PostgreSQL database (or a MariaDB one, for a
shop) and a Redis key prefix (or a RabbitMQ queue prefix) per run, and real `lethe` /
`celery` processes started as a user would.

Nothing here assumes an empty server: every run makes its own database and prefix
and removes them afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from harness import (
    MARIADB_URL,
    PHP,
    POSTGRES_URL,
    RABBITMQ_SERVER,
    RABBITMQ_URL,
    RABBITMQCTL,
    REDIS_SERVER,
    REDIS_URL,
    ROOT,
    Lethe,
    OwnRabbitMQ,
    OwnRedis,
    base_env,
    rabbitmqctl,
)

REQUIRED = os.environ.get("LETHE_REQUIRE_SERVICES") == "1"


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc}); start it or set the LETHE_TEST_* URL"
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    import sqlalchemy as sa

    try:
        with sa.create_engine(POSTGRES_URL).connect() as connection:
            connection.execute(sa.text("select 1"))
    except Exception as exc:  # any failure to connect means: no server for this run
        _unavailable("PostgreSQL", exc)
    return POSTGRES_URL


def _own_database(server: str, prefix: str) -> Iterator[str]:
    """A fresh database of the test's own on the shared server, dropped afterwards."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"{server.rsplit('/', 1)[0]}/{name}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """Lethe's store: a fresh PostgreSQL database of the test's own."""
    yield from _own_database(postgres_server, "lethe_test")


@pytest.fixture
def shop_postgres_url(postgres_server: str) -> Iterator[str]:
    """The shop's own PostgreSQL database, apart from Lethe's store."""
    yield from _own_database(postgres_server, "lethe_shop")


@pytest.fixture(scope="session")
def mariadb_server() -> str:
    import sqlalchemy as sa

    try:
        with sa.create_engine(MARIADB_URL).connect() as connection:
            connection.execute(sa.text("select 1"))
    except Exception as exc:  # any failure to connect means: no server for this run
        _unavailable("MariaDB", exc)
    return MARIADB_URL


@pytest.fixture
def mariadb_url(mariadb_server: str) -> Iterator[str]:
    """A fresh MariaDB database of our own on the shared server (a shop's), dropped
    afterwards: mysql+pymysql://root@127.0.0.1:3306/lethe_test_<hex>."""
    import sqlalchemy as sa

    name = f"lethe_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(mariadb_server)
    with admin.begin() as connection:
        connection.execute(
            sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        )
    yield sa.make_url(mariadb_server).set(database=name).render_as_string(hide_password=False)
    with admin.begin() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture(scope="session")
def php() -> str:
    """Debian's php-cli with PDO MySQL and curl: the PHP shop's code runs on it."""
    if not PHP:
        _unavailable("php", FileNotFoundError("not on PATH: ./run-tests installs php-cli"))
    return PHP


@pytest.fixture(scope="session")
def redis_server() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix of our own; its keys are deleted afterwards."""
    import redis

    prefix = f"lethe-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


@pytest.fixture(scope="session")
def rabbitmq_server() -> str:
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        _unavailable("RabbitMQ", exc)
    return RABBITMQ_URL


def _delete_rabbitmq_names(url: str, env: dict[str, str]) -> None:
    """Delete the queues and exchanges of one install: those its settings name (the
    workers' own remote-control and gossip queues expire with them)."""
    from kombu import Connection

    from worker.app import celery_config
    from worker.settings import load_settings

    config = celery_config(load_settings(env))
    queue, control = config["task_default_queue"], config["control_exchange"]
    exchanges = [queue, f"{control}.pidbox", f"reply.{control}.pidbox", config["event_exchange"]]
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        channel.queue_delete(queue)  # RabbitMQ deletes what does not exist without a word
        for exchange in exchanges:
            channel.exchange_delete(exchange)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Lethe]:
    """The embedded default: no settings at all but a home folder."""
    lethe = Lethe(tmp_path, base_env(tmp_path))
    yield lethe
    lethe.kill_workers()  # SIGKILL: a warm shutdown waited seconds per test, for nothing


def _served(tmp_path: Path, postgres_url: str, settings: dict[str, str]) -> Lethe:
    """A broker server and a PostgreSQL store (with `settings`), migrated as ops would
    (`lethe db upgrade`)."""
    env = base_env(tmp_path)
    env.update(
        {
            "LETHE_DATABASE_URL": postgres_url,
            "LETHE_SECRET": f"test-secret-{uuid.uuid4().hex}",
            **settings,
        }
    )
    lethe = Lethe(tmp_path, env)
    lethe.run("db", "upgrade")
    return lethe


@pytest.fixture
def distributed(tmp_path: Path, postgres_url: str, redis_prefix: str) -> Iterator[Lethe]:
    """Redis broker and PostgreSQL store."""
    lethe = _served(
        tmp_path,
        postgres_url,
        {
            "LETHE_BROKER_URL": REDIS_URL,
            "LETHE_QUEUE_PREFIX": redis_prefix,
            "LETHE_VISIBILITY_TIMEOUT": "5",
        },
    )
    yield lethe
    lethe.kill_workers()  # SIGKILL: a warm shutdown waited seconds per test, for nothing


@pytest.fixture
def rabbitmq(tmp_path: Path, postgres_url: str, rabbitmq_server: str) -> Iterator[Lethe]:
    """RabbitMQ broker and PostgreSQL store; the queue and exchanges carry a prefix of their
    own, and are deleted afterwards."""
    lethe = _served(
        tmp_path,
        postgres_url,
        {
            "LETHE_BROKER_URL": rabbitmq_server,
            "LETHE_QUEUE_PREFIX": f"lethe-test-{uuid.uuid4().hex[:10]}",
        },
    )
    yield lethe
    lethe.kill_workers()
    _delete_rabbitmq_names(rabbitmq_server, lethe.env)


@pytest.fixture
def rabbitmq_vhost(rabbitmq_server: str) -> Iterator[str]:
    """A vhost of our own, deleted afterwards with whatever it holds: a test may then close
    every connection in it without touching the other tests on the shared server."""
    if not RABBITMQCTL:
        _unavailable("rabbitmqctl", FileNotFoundError("not on PATH"))
    name = f"lethe-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        # the user LETHE_TEST_RABBITMQ_URL logs in as, not always guest
        user = urlsplit(rabbitmq_server).username or "guest"
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture
def rabbitmq_alone(
    tmp_path: Path, postgres_url: str, rabbitmq_server: str, rabbitmq_vhost: str
) -> Iterator[Lethe]:
    """RabbitMQ broker in a vhost of its own (`rabbitmq_vhost`) and a PostgreSQL store."""
    url = urlsplit(rabbitmq_server)._replace(path=f"/{quote(rabbitmq_vhost, safe='')}")
    lethe = _served(
        tmp_path,
        postgres_url,
        {
            "LETHE_BROKER_URL": urlunsplit(url),
            "LETHE_QUEUE_PREFIX": "lethe",  # the default, named: the vhost keeps it ours
        },
    )
    yield lethe
    lethe.kill_workers()  # before the vhost goes, so that no worker retries against it


@pytest.fixture(params=["embedded", "distributed"])
def lethe(request: pytest.FixtureRequest) -> Lethe:
    """Each pipeline test runs on the embedded default and on Redis + PostgreSQL (and a few
    on RabbitMQ + PostgreSQL too: `ON_EVERY_BROKER` in test_pipeline.py)."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def samples() -> Path:
    return ROOT / "samples" / "events.jsonl"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of the test's own, killed afterwards if still running."""
    if not REDIS_SERVER:
        _unavailable("redis-server", FileNotFoundError("not on PATH"))
    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.kill()


@pytest.fixture
def own_rabbitmq() -> Iterator[Callable[[str], OwnRabbitMQ]]:
    """Starts a RabbitMQ node of the test's own, with `rabbit` settings (Erlang terms, e.g.
    "{consumer_timeout, 5000}"); stopped afterwards."""
    if not (RABBITMQ_SERVER and RABBITMQCTL):
        _unavailable("rabbitmq-server", FileNotFoundError("not on PATH"))
    started: list[OwnRabbitMQ] = []

    def start(settings: str = "") -> OwnRabbitMQ:
        node = OwnRabbitMQ(settings)
        started.append(node)
        node.start()
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture
def on_own_rabbitmq(
    tmp_path: Path, postgres_url: str, own_rabbitmq: Callable[[str], OwnRabbitMQ]
) -> Iterator[Callable[[str], tuple[Lethe, OwnRabbitMQ]]]:
    """A Lethe install on a RabbitMQ node of its own (`own_rabbitmq`) and PostgreSQL."""

    installs: list[Lethe] = []

    def start(settings: str = "") -> tuple[Lethe, OwnRabbitMQ]:
        node = own_rabbitmq(settings)
        settings = {"LETHE_BROKER_URL": node.url, "LETHE_QUEUE_PREFIX": "lethe"}  # its own node
        installs.append(_served(tmp_path, postgres_url, settings))
        return installs[-1], node

    yield start
    for lethe in installs:
        lethe.kill_workers()  # before the node goes, so that no worker retries against it
