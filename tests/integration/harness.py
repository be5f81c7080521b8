"""Real processes for integration tests: `lethe` and `celery` run as a user would run them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LETHE = str(BIN / "lethe")
CELERY = str(BIN / "celery")
NOW = "2026-11-26T00:00:00+01:00"
REDIS_URL = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("LETHE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get(
    "LETHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Each test makes a database of its own on this server (conftest.mariadb_url); the URL's
# own database, if it names one, is only where the first connection lands.
MARIADB_URL = os.environ.get("LETHE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
# The fault tests close RabbitMQ connections with it, so it must run on the server's machine.
RABBITMQCTL = shutil.which("rabbitmqctl")
# The Redis crash tests start a server of their own, to kill it.
REDIS_SERVER = shutil.which("redis-server")
# The PHP shop's code (examples/php/) runs on Debian's php-cli, installed by ./run-tests.
PHP = shutil.which("php")


class Lethe:
    """One Lethe installation: an environment, and the commands and workers run in it."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home = home
        self.env = env
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120):
        result = subprocess.run(
            [LETHE, *args],
            env=self.env,
            cwd=self.home,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"lethe {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def python(self, code: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run shop code (the client) in its own process, as the shop would."""
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"shop code failed:\n{result.stdout}\n{result.stderr}")
        return result

    def start_worker(self, *extra: str) -> subprocess.Popen:
        log = self.home / f"worker-{len(self.logs)}.log"
        if self.embedded:
            command = [LETHE, "worker", *extra]
        else:
            command = [
                CELERY,
                "-A",
                "worker.app",
                "worker",
                "--loglevel=INFO",
                "-Q",
                f"{self.env['LETHE_QUEUE_PREFIX']}.events",
                *extra,
            ]
        handle = log.open("w")
        process = subprocess.Popen(
            command,
            env=self.env,
            cwd=self.home,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(process)
        self.logs.append(log)
        wait_for(lambda: "ready" in log.read_text() or process.poll() is not None, 60, "worker")
        assert process.poll() is None, f"worker died at start:\n{log.read_text()}"
        return process

    def spawn(self, *command: str, name: str) -> subprocess.Popen:
        """A long-running process of this install (beat, the intake, a relay), logged to
        `name`.log and stopped with the workers."""
        log = self.home / f"{name}.log"
        process = subprocess.Popen(
            list(command),
            env=self.env,
            cwd=self.home,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(process)
        self.logs.append(log)
        return process

    def kill_workers(self, sig: int = 9) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, sig)
                process.wait(timeout=30)
        self.workers.clear()

    @property
    def embedded(self) -> bool:
        return "LETHE_BROKER_URL" not in self.env

    def deadlines(self) -> list[dict]:
        return json.loads(self.run("deadlines", "--format", "json", "--now", NOW).stdout)

    def simulate(self, events_file: Path) -> list[dict]:
        result = self.run("simulate", str(events_file), "--now", NOW, check=False)
        return json.loads(result.stdout)

    def store_count(self, table: str, where: str | None = None, **values: object) -> int:
        import sqlalchemy as sa

        engine = sa.create_engine(
            self.env.get("LETHE_DATABASE_URL") or f"sqlite:///{self.home / 'var' / 'lethe.sqlite3'}"
        )
        try:
            with engine.connect() as connection:
                query = sa.text(
                    f"select count(*) from {table}" + (f" where {where}" if where else "")
                )
                return connection.execute(query, values).scalar_one()
        except Exception:
            return -1
        finally:
            engine.dispose()

    def wait_event(self, event_id: str, timeout: float = 60) -> None:
        """One event in the store, by its id: after a sweep has forgotten people, the size
        of the event log says nothing about what arrived."""
        wait_for(
            lambda: self.store_count("events", "id = :id", id=event_id) == 1,
            timeout,
            f"event {event_id} in the store",
            self.logs,
        )

    def wait_stored(self, events: int, timeout: float = 60) -> None:
        wait_for(
            lambda: self.store_count("events") >= events,
            timeout,
            f"{events} events in the store",
            self.logs,
        )


def start_intake(lethe: Lethe) -> str:
    """`lethe intake` on a free port, with a token of its own unless one is set; its URL."""
    lethe.env.setdefault("LETHE_INTAKE_TOKEN", f"intake-{uuid.uuid4().hex}")
    port = free_port()
    process = lethe.spawn(LETHE, "intake", "--port", str(port), name=f"intake-{port}")
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, f"intake died:\n{lethe.logs[-1].read_text()}"
        try:
            urllib.request.urlopen(base + "/openapi.json", timeout=2)
            return True
        except OSError:
            return False

    wait_for(answers, 30, "the intake to answer", lethe.logs)
    return base


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl on the local node, the shared test server: the fault tests close
    connections with it, only ever those of a vhost of their own."""
    result = subprocess.run(
        [RABBITMQCTL or "rabbitmqctl", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"rabbitmqctl {' '.join(args)}: {result.stderr}"
    return result.stdout


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    logs: list[Path] | None = None,
    every: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    tails = "\n".join(p.read_text()[-3000:] for p in logs or [] if p.exists())
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def teach_loyalty_joined(register: Path) -> None:
    """Add `loyalty.joined` to a register's catalogue and the customers' clock: an event
    type a worker on the shipped register refuses."""
    text = register.read_text()
    text = text.replace(
        "  erasure.requested:",
        "  loyalty.joined: joined the loyalty programme\n  erasure.requested:",
    )
    text = text.replace(
        "clock: [order.closed, {type: contact.made, when: {direction: inbound}}]",
        "clock: [order.closed, {type: contact.made, when: {direction: inbound}}, loyalty.joined]",
    )
    register.write_text(text)


def copy_register(tmp_path: Path) -> Path:
    target = tmp_path / "register.yaml"
    shutil.copy(ROOT / "registers" / "negomarkets.yaml", target)
    return target


class OwnRedis:
    """A redis-server of the test's own, persisted as docker-compose.yml runs Redis
    (append-only file, fsync every second), so it can be killed and started again without
    touching the server the other tests share."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        with socket.socket() as probe:  # a port free now; the server binds it at once
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            REDIS_SERVER or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ]  # fmt: skip
        with (self.folder / "server.log").open("a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, 30, "the test's own redis-server")

    def _answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown that writes anything on the way out."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)


# The RabbitMQ fault tests that restart the broker start a node of their own.
RABBITMQ_SERVER = shutil.which("rabbitmq-server")


class OwnRabbitMQ:
    """A RabbitMQ node of the test's own (its own node name, ports and data folder), so it
    can be stopped and started again without touching the server the other tests share.
    `settings` are Erlang terms for the `rabbit` application (advanced.config). Its folder
    is in the system's temporary folder, not the test's (pytest's is private to the user
    running the tests, and the server script runs the node as its own user)."""

    def __init__(self, settings: str = "") -> None:
        import tempfile
        import uuid

        self.folder = folder = Path(tempfile.mkdtemp(prefix="lethe-test-rabbitmq-"))
        ports = []
        for _ in range(2):  # the AMQP port and the node's distribution port
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                ports.append(probe.getsockname()[1])
        self.port = ports[0]
        self.node = f"lethe-test-{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (folder / "advanced.config").write_text(f"[{{rabbit, [{settings}]}}].\n")
        (folder / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(ports[1]),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_PID_FILE": str(folder / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),  # none: the defaults
        }
        if os.geteuid() == 0:  # the server script runs the node as its own user
            for path in [folder, *folder.iterdir()]:
                shutil.chown(path, "rabbitmq", "rabbitmq")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with (self.folder / "server.log").open("a") as log:
            self.process = subprocess.Popen(
                [RABBITMQ_SERVER or "rabbitmq-server"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._answers, 90, f"the test's own RabbitMQ node {self.node}")

    def _answers(self) -> bool:
        from kombu import Connection

        assert self.process is not None and self.process.poll() is None, (
            self.folder / "server.log"
        ).read_text()[-3000:]
        try:
            with Connection(self.url, connect_timeout=1) as connection:
                connection.ensure_connection(max_retries=1)
            return True
        except Exception:
            return False

    def ctl(self, *args: str) -> str:
        result = subprocess.run(
            [RABBITMQCTL or "rabbitmqctl", "-n", self.node, "--quiet", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"rabbitmqctl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def stop(self) -> None:
        """A full stop of the node (`rabbitmqctl shutdown`, as `systemctl stop` does)."""
        self.ctl("shutdown")
        assert self.process is not None
        self.process.wait(timeout=60)

    def kill(self) -> None:
        """Stopped if still running, and its folder removed."""
        if self.process and self.process.poll() is None:
            try:
                self.stop()
            except (AssertionError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


def base_env(home: Path) -> dict[str, str]:
    """The environment of a `lethe` of the test's own: no LETHE_* of the caller's, its home
    under `home`, JSON logs, the checkout's .venv/bin first on the PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(
        {
            "LETHE_HOME": str(home / "var"),
            "LETHE_LOG_FORMAT": "json",
            "PATH": f"{BIN}:{env.get('PATH', '')}",
        }
    )
    return env
