"""The Celery app, configured from settings. `celery -A worker.app worker` starts a worker.

The client imports this module only to publish by task name; task code lives
in `tasks/` and is imported by workers alone.
"""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import beat_embedded_init, worker_init

# Imported for its Celery `setup_logging` receiver: worker, beat and Flower then
# log through Lethe's processors (personal data kept out), not Celery's format.
from worker import logs as _logs  # noqa: F401
from worker.brokers import embedded as embedded_broker
from worker.brokers import redis_transport as redis_broker
from worker.brokers.monitoring import UnconfirmedEvents
from worker.settings import Settings, SettingsError, current_settings, whole_number

INGEST_TASK = "lethe.ingest"
INGEST_ONE_TASK = "lethe.ingest_one"
NOOP_TASK = "lethe.noop"

# Redis redelivers a task that stays unacknowledged (running, or waiting for a
# retry's countdown) longer than this; it must exceed the longest task and the
# longest retry delay (RETRY_BACKOFF_MAX in tasks/ingest.py and tasks/sweep.py).
DEFAULT_VISIBILITY_TIMEOUT = 3600
# RabbitMQ's own limit (its `consumer_timeout`, 30 minutes by default): a delivery left
# unacknowledged longer closes the worker's channel and the message is delivered again.
# A task waiting for its retry's countdown is such a delivery (the worker holds it until
# it runs), so every retry delay stays well below: ingestion waits at most 10 minutes
# and a sweep 20 (RETRY_BACKOFF_MAX), which leaves the retried task time to run.
RABBITMQ_CONSUMER_TIMEOUT = 1800
# AMQP heartbeat (seconds): a worker whose link to RabbitMQ went silent without a close (a
# network cut, a peer gone without a FIN) takes it for lost after two missed beats, and
# reconnects. RabbitMQ's own default, which it negotiated down to from Celery's 120 anyway.
DEFAULT_AMQP_HEARTBEAT = 60
# How long a broker that accepts a connection but does not answer is waited for.
BROKER_TIMEOUT = 10
# Connecting to RabbitMQ includes its handshake, so this also bounds the wait on a server
# that accepts connections and never answers (Celery's own default, made explicit).
AMQP_CONNECT_TIMEOUT = 4


def events_queue(settings: Settings) -> str:
    return f"{settings.queue_prefix}.events"


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility = whole_number("LETHE_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT)
    transport_options: dict[str, Any] = {}
    transport = None
    broker: dict[str, Any] = {}
    if settings.embedded:
        transport = embedded_broker.TRANSPORT
        folder = settings.broker_folder
        for sub in ("out", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder / "out"),
            "data_folder_out": str(folder / "out"),
            "processed_folder": str(folder / "processed"),
            # kombu's default is a `control` folder in the current directory
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # the folder is polled; kombu's default of 1 s delays every event by up
            # to a second, and listing a folder ten times a second costs nothing
            "polling_interval": 0.1,
        }
    elif settings.broker_url.startswith(("redis://", "rediss://")):
        transport = redis_broker.TRANSPORT
        broker = redis_tls(settings.broker_url)
        transport_options = {
            "visibility_timeout": visibility,
            # kombu sweeps for expired unacked messages every interval x throttle
            # seconds (100 s by default): keep that well below a short timeout.
            "unacked_restore_interval": max(1, min(10, visibility // 5)),
            "unacked_restore_throttle": 1 if visibility < 300 else 10,
            # several Lethe installs (or test runs) can share one Redis server
            "global_keyprefix": f"{settings.queue_prefix}:",
            # A server that accepts but never answers (stuck, or a half-open link)
            # must fail a shop's emit() with BrokerUnavailable, not hang it for good;
            # kept well above the workers' 1 s blocking reads.
            "socket_connect_timeout": BROKER_TIMEOUT,
            "socket_timeout": BROKER_TIMEOUT,
        }
    elif is_amqp(settings.broker_url):
        broker = amqp_config(settings)
        transport_options = broker.pop("broker_transport_options")
    return {
        "broker_url": settings.broker_url,
        "broker_transport": transport,
        "broker_transport_options": transport_options,
        **broker,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": events_queue(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        # A task is acknowledged once it has run, and given back if its worker
        # dies: the event is then ingested again, which is harmless (idempotent).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # High enough that single-event messages can be gathered into one
        # transaction (tasks/ingest.py); they stay unacknowledged until then.
        "worker_prefetch_multiplier": whole_number("LETHE_PREFETCH", 64),
        "worker_hijack_root_logger": False,
        # structlog writes its own JSON lines; Celery must not re-wrap them as warnings
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "timezone": "Europe/Paris",
        "enable_utc": True,
        "broker_pool_limit": 10,
    }


def redis_tls(url: str) -> dict[str, Any]:
    """TLS for a rediss:// URL. Naming Lethe's own transport class hides the scheme from
    kombu, which would then connect without TLS; and where kombu, given no
    `ssl_cert_reqs` in the URL, trusts any certificate, Lethe checks it."""
    if not url.startswith("rediss://") or "ssl_cert_reqs=" in url:
        return {}  # the URL's own ssl_* settings reach kombu as they are
    return {"broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}}


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://", "pyamqp://"))


def amqp_config(settings: Settings) -> dict[str, Any]:
    """RabbitMQ: what makes a message that left the shop survive a broker crash, and keeps
    an install's names its own.

    Queues are durable and messages persistent (Celery's defaults, kept); the server
    confirms each publish once it holds the message (publisher confirms), so emit()
    returns only then, and a message the server refuses raises instead of vanishing.
    No visibility timeout: a worker's unacknowledged messages go back to the queue the
    moment its connection closes (see RABBITMQ_CONSUMER_TIMEOUT for the one limit).
    """
    prefix = settings.queue_prefix
    return {
        "broker_transport_options": {
            "confirm_publish": True,
            # As Redis's socket_timeout: a server that stops answering once connected (a
            # memory or disk alarm blocks publishers; a half-open link) fails a read or a
            # write after this long, instead of holding the shop's emit() for good.
            "read_timeout": BROKER_TIMEOUT,
            "write_timeout": BROKER_TIMEOUT,
        },
        "broker_connection_timeout": AMQP_CONNECT_TIMEOUT,
        "broker_heartbeat": whole_number("LETHE_BROKER_HEARTBEAT", DEFAULT_AMQP_HEARTBEAT),
        # RabbitMQ closes a worker's channel when a delivery stays unacknowledged past its
        # consumer_timeout (a task longer than RABBITMQ_CONSUMER_TIMEOUT): a channel error,
        # which Celery took for an "Unrecoverable error" and stopped the worker on. Retried
        # as a lost connection instead (tests/integration/test_rabbitmq_outages.py).
        "broker_channel_error_retry": True,
        # The events queue and its exchange are named by task_default_queue; these are
        # the other names Celery declares (remote control, mingle, gossip: `celery.pidbox`
        # and `celeryev` by default). Shared by the installs (or test runs) of one server,
        # they would let one install's `celery inspect`, or a worker's start-up sync,
        # reach another's workers. On Redis, global_keyprefix does the same.
        "control_exchange": f"{prefix}.celery",
        "event_exchange": f"{prefix}.celeryev",
        "event_queue_prefix": f"{prefix}.celeryev",
    }


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or current_settings()
    from schedules.beat import install as install_beat_schedule

    app = Celery(
        "lethe",
        include=["tasks.ingest", "tasks.sweep", "tasks.outbox", "tasks.coverage"],
        events=UnconfirmedEvents,
    )
    app.conf.update(celery_config(settings))
    # Beside the config, not in it: `celery inspect conf` and Flower show any worker's
    # config to whoever reaches the broker, and this holds the secret and DB passwords.
    app.lethe_settings = settings
    install_beat_schedule(app, settings)
    return app


def _app_or_exit() -> Celery:
    try:
        return create_app()
    except SettingsError as exc:
        if Path(sys.argv[0]).name != "celery":
            raise  # the shop's code and `lethe` show it their own way
        # `celery -A worker.app ...` would bury the one line that matters at the
        # end of a chained traceback; exit as a worker refusing its config does.
        print(f"lethe: {exc}", file=sys.stderr)
        raise SystemExit(78) from None


app = _app_or_exit()


# The worker's pid, kept for the beat process it forks (`--beat`): read there after
# the fork, getppid() could already name whoever adopted an orphan.
_worker_pid: list[int] = []


@worker_init.connect
def _remember_worker_pid(**_: Any) -> None:
    _worker_pid[:] = [os.getpid()]


@beat_embedded_init.connect
def _end_beat_with_its_worker(**_: Any) -> None:
    from worker.brokers.orphans import end_with_parent

    # SIGTERM, not SIGKILL: beat's handler then closes its schedule file cleanly.
    end_with_parent(_worker_pid[0] if _worker_pid else os.getppid())


@worker_init.connect
def _prepare_store(**_: Any) -> None:
    import sys

    from worker.store.migrate import SchemaNotReady, ensure_schema

    settings = current_settings()
    try:
        ensure_schema(settings)
    except SchemaNotReady as exc:
        # Celery logs and ignores a receiver's Exception; a worker on an old
        # schema would acknowledge tasks it cannot store, so it must not start.
        print(f"lethe: {exc}", file=sys.stderr)
        raise SystemExit(78) from None
    # Nor on a register it cannot load: every event it took would be set aside.
    if problem := register_refusal(settings):
        print(f"lethe: {problem}", file=sys.stderr)
        raise SystemExit(78)


def register_refusal(settings: Settings) -> str | None:
    """Why a worker must not start on this register (file:line and the remedy), or None.

    Checked, not kept: each worker process still loads the register on its first
    task (worker/runtime.py).
    """
    from worker.domain.register_file import RegisterError, load_register

    try:
        load_register(settings.register_path)
    except RegisterError as exc:
        return (
            f"the register cannot be used, so the worker does not start:\n{exc}\n"
            f"fix it (`lethe register check {settings.register_path}` lists every problem), "
            "then start the worker again"
        )
    return None
