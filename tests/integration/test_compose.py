"""The compose stack, validated without a Docker engine (none runs here): Debian's
docker-compose parses and resolves docker-compose.yml with the example env file, and the
resolved stack has the services, volumes, health checks and settings ops rely on. Nothing is
built or started: docs/operations.md says so."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from harness import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
RABBITMQ_FILE = ROOT / "docker-compose.rabbitmq.yml"  # an override: RabbitMQ as the broker
ENV_EXAMPLE = ROOT / ".env.example"
LETHE_SERVICES = {"migrate", "worker", "beat", "flower", "dashboard", "intake"}
SECRETS = (
    "LETHE_SECRET",
    "LETHE_DASHBOARD_TOKEN",
    "LETHE_INTAKE_TOKEN",
    "POSTGRES_PASSWORD",
    "FLOWER_BASIC_AUTH",
    "RABBITMQ_PASSWORD",
)


def _compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        message = "docker-compose is missing: ./run-tests installs Debian's docker-compose"
        if os.environ.get("LETHE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def compose(
    *args: str, env_file: Path = ENV_EXAMPLE, files: tuple[Path, ...] = (COMPOSE_FILE,)
) -> subprocess.CompletedProcess:
    # Only the env file may supply values: the test's own environment must not.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    named = [arg for file in files for arg in ("-f", str(file))]
    return subprocess.run(
        [_compose(), "--env-file", str(env_file), *named, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture(scope="module")
def stack() -> dict:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_compose_file_is_valid_with_the_example_env_file():
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_stack_has_every_service_with_health_checks(stack: dict):
    services = stack["services"]
    assert set(services) == {"redis", "postgres", *LETHE_SERVICES}
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service, f"{name} has no health check"
    assert services["migrate"]["command"] == ["lethe", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in LETHE_SERVICES - {"migrate"}:
        waits = services[name]["depends_on"]
        assert waits["migrate"]["condition"] == "service_completed_successfully", name
        assert waits["postgres"]["condition"] == "service_healthy", name
    assert services["dashboard"]["command"][:2] == ["lethe", "dashboard"]
    assert "beat" in services["beat"]["command"] and "flower" in services["flower"]["command"]


def test_queued_events_and_the_store_survive_a_restart(stack: dict):
    redis = stack["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "redis-data:/data" in _volumes(redis)
    postgres = stack["services"]["postgres"]
    assert "postgres-data:/var/lib/postgresql/data" in _volumes(postgres)
    assert {"redis-data", "postgres-data"} <= set(stack["volumes"])


def test_workers_scale_and_beat_is_single(stack: dict):
    worker = stack["services"]["worker"]
    # --scale worker=N needs no fixed name and no host port
    assert "container_name" not in worker and "ports" not in worker
    assert "--task-events" in worker["command"], "Flower's task view needs task events"
    beat = stack["services"]["beat"]
    assert "container_name" not in beat
    assert beat.get("deploy", {}).get("replicas", 1) == 1


def test_no_secret_is_baked_in():
    text = COMPOSE_FILE.read_text() + RABBITMQ_FILE.read_text()
    for name in SECRETS:
        # every secret is interpolated, and compose refuses to run without it
        for use in re.findall(rf"\$\{{{name}[^}}]*\}}", text):
            assert use.startswith(f"${{{name}:?"), f"{name} has a default: {use}"
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in SECRETS:
        assert "CHANGE-ME" in example[name], f"{name} in .env.example is not a placeholder"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not any(f"{name}=" in dockerfile for name in SECRETS)
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE), "the image runs as root"


def test_a_missing_secret_stops_compose_with_its_name(tmp_path: Path):
    partial = tmp_path / "partial.env"
    partial.write_text(
        "\n".join(
            line
            for line in ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith("LETHE_SECRET=")
        )
    )
    result = compose("config", "-q", env_file=partial)
    assert result.returncode != 0
    assert "set LETHE_SECRET in .env" in result.stderr


def test_lethe_services_get_the_settings_of_the_design(stack: dict):
    for name in LETHE_SERVICES:
        env = stack["services"][name]["environment"]
        assert env["LETHE_BROKER_URL"] == "redis://redis:6379/0"
        assert env["LETHE_DATABASE_URL"].startswith("postgresql+psycopg://lethe:")
        assert env["LETHE_DATABASE_URL"].endswith("@postgres:5432/lethe")
        for setting in ("LETHE_SHOP_DATABASE_URL", "LETHE_REGISTER", "LETHE_SECRET"):
            assert env[setting], f"{name} lacks {setting}"
        assert env["LETHE_LOG_FORMAT"] == "json"


def test_what_the_dockerfile_copies_exists():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is missing"


def _volumes(service: dict) -> list[str]:
    """`source:target` of each volume, whichever syntax compose printed (short or long)."""
    shown = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            volume = f"{volume.get('source')}:{volume.get('target')}"
        shown.append(":".join(str(volume).split(":")[:2]))
    return shown


def test_settings_set_in_the_env_file_reach_every_lethe_service(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        ENV_EXAMPLE.read_text() + "\nLETHE_SUPPRESSION_DAYS=2000\nLETHE_SWEEP_PARTS=4\n"
    )
    result = compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in LETHE_SERVICES:
        env = services[name]["environment"]
        assert env["LETHE_SUPPRESSION_DAYS"] == "2000", name
        assert env["LETHE_SWEEP_PARTS"] == "4", name
        assert env["LETHE_FORGET_AFTER_DAYS"] in ("", None), name  # unset: Lethe's default


def test_the_rabbitmq_override_moves_every_lethe_service_to_rabbitmq():
    result = compose("config", files=(COMPOSE_FILE, RABBITMQ_FILE))
    assert result.returncode == 0, result.stderr
    stack = yaml.safe_load(result.stdout)
    rabbitmq = stack["services"]["rabbitmq"]
    assert "healthcheck" in rabbitmq
    # durable queues and persistent messages outlive a restart only on a volume
    assert "rabbitmq-data:/var/lib/rabbitmq" in _volumes(rabbitmq)
    for name in LETHE_SERVICES:
        service = stack["services"][name]
        env = service["environment"]
        assert env["LETHE_BROKER_URL"].startswith("amqp://lethe:CHANGE-ME"), name
        assert env["LETHE_BROKER_URL"].endswith("@rabbitmq:5672/lethe"), name
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
        # the rest of the settings are the base file's
        assert env["LETHE_DATABASE_URL"].endswith("@postgres:5432/lethe"), name
        assert env["LETHE_SECRET"] and env["LETHE_LOG_FORMAT"] == "json", name


def test_the_stack_starts_for_real_and_every_service_passes_its_health_check(
    tmp_path: Path, own_redis, postgres_url: str, mariadb_url: str
):
    """Every Lethe service of docker-compose.yml started with its own command and environment
    (.env.example's values, the shop pointed at the loopback MariaDB), in dependency order,
    each checked by its own health check; then an event posted to the intake is stored by
    the worker, and a row of the shop's outbox by beat's relay."""
    import json
    import urllib.request

    import sqlalchemy as sa
    from compose_stack import Loopback, Stack

    env_file = tmp_path / ".env"
    env_file.write_text(
        ENV_EXAMPLE.read_text() + f"\nLETHE_SHOP_DATABASE_URL={mariadb_url}\nLETHE_OUTBOX_EVERY=1\n"
    )
    result = compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    stack = Stack(
        config=yaml.safe_load(result.stdout),
        folder=tmp_path / "stack",
        loopback=Loopback({"redis": own_redis.url, "postgres": postgres_url}),
        external={"redis", "postgres"},
    )
    stack.folder.mkdir()
    order = stack.order()
    assert order.index("migrate") < min(order.index(name) for name in LETHE_SERVICES - {"migrate"})
    assert set(order) == LETHE_SERVICES
    try:
        stack.start("migrate")
        stack.wait_exit("migrate", 0)
        # the shop's outbox, as its DBA makes it, with the stack's own settings
        install = subprocess.run(
            ["lethe", "outbox", "install"],
            env=stack.started["migrate"].env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert install.returncode == 0, install.stderr
        for name in order[1:]:
            stack.start(name)
        for name in order[1:]:
            stack.wait_healthy(name)

        intake = stack.started["intake"].env
        base = f"http://127.0.0.1:{stack.port(8001)}"
        event = {
            "id": "compose-1",
            "type": "order.closed",
            "subject": "customer:1",
            "occurred_at": "2026-03-01T10:00:00+01:00",
            "data": {"order": "C-1"},
        }
        request = urllib.request.Request(
            base + "/v1/events",
            data=json.dumps([event]).encode(),
            headers={
                "Authorization": f"Bearer {intake['LETHE_INTAKE_TOKEN']}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
        shop = sa.create_engine(mariadb_url)
        with shop.begin() as connection:
            connection.execute(
                sa.text(
                    "insert into lethe_outbox (id, type, subject, occurred_at) values "
                    "('compose-2', 'order.closed', 'customer:2', '2026-03-01T11:00:00+01:00')"
                )
            )
        shop.dispose()
        store = sa.create_engine(intake["LETHE_DATABASE_URL"])
        deadline = time.monotonic() + 60
        while True:
            with store.connect() as connection:
                stored = connection.execute(sa.text("select count(*) from events")).scalar_one()
            if stored == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        store.dispose()
        assert stored == 2, stack.tail("worker") + stack.tail("beat")

        token = stack.started["dashboard"].env["LETHE_DASHBOARD_TOKEN"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{stack.port(8000)}/metrics",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert "lethe_outbox_pending 0.0" in response.read().decode()
        user, password = stack.started["flower"].env["FLOWER_BASIC_AUTH"].split(":", 1)
        request = urllib.request.Request(f"http://127.0.0.1:{stack.port(5555)}/")
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {credentials}")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    finally:
        stack.stop()
