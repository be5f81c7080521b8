"""RabbitMQ outages beyond a dropped connection (test_rabbitmq_faults.py): the whole broker
restarted under a running worker and a streaming shop, `consumer_timeout` closing a worker's
channel during a long task, and a network that goes silent without closing anything.

The restart and the consumer timeout need a node of the test's own (`on_own_rabbitmq`: its
own node name, ports and data folder), as the shared server must not be restarted or
reconfigured; the silent network is a relay in front of the shared server, in a vhost of
the test's own.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from harness import Lethe, wait_for
from shop_process import shop_process
from tcp_proxy import TcpProxy

# As shop_process.STREAM, but a shop that meets a broker away keeps the event and sends it
# again (what BrokerUnavailable is for): an event is written to the sent file only once
# emit() has returned, so the file holds what the shop may count on being stored.
STREAM_THROUGH_OUTAGES = """
import json, os, sys, time
from worker.client import BrokerUnavailable, emit
stop, sent = sys.argv[1], open(sys.argv[2], "w")
i = 0
while not os.path.exists(stop):
    event = dict(
        type="order.closed" if i % 3 else "contact.made",
        subject=f"customer:{i % 40}",
        id=f"s-{i}",
        occurred_at=f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+01:00",
        data={} if i % 3 else {"direction": ("inbound", "outbound")[i % 2]},
    )
    try:
        emit(**event)
    except BrokerUnavailable:
        time.sleep(0.2)
        continue
    sent.write(json.dumps(event) + "\\n")
    sent.flush()
    i += 1
    time.sleep(0.005)
"""


def _sent(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_full_broker_restart_under_a_streaming_shop_loses_no_event_it_confirmed(
    on_own_rabbitmq, tmp_path: Path
):
    lethe, node = on_own_rabbitmq()
    worker = lethe.start_worker()
    stop, sent = tmp_path / "stop", tmp_path / "sent.jsonl"
    shop = shop_process(lethe, STREAM_THROUGH_OUTAGES, str(stop), str(sent))
    try:
        wait_for(lambda: lethe.store_count("events") >= 20, 60, "the stream flowing", lethe.logs)
        node.stop()  # the whole node: queues, connections, the worker's unacked deliveries
        node.start()  # the same data folder: durable queue, persistent messages
        # stored only once the worker consumes again, and the shop publishes again
        after = f"s-{_sent(sent) + 20}"
        wait_for(lambda: _sent(sent) > int(after[2:]), 60, "the shop to send again")
        lethe.wait_event(after, 90)
    finally:
        stop.touch()
        output = shop.communicate(timeout=60)[0]
    assert shop.returncode == 0, output
    assert worker.poll() is None, "the worker died instead of waiting for the broker"
    total = _sent(sent)
    lethe.wait_stored(total)
    assert lethe.store_count("events") == total and lethe.store_count("dead_letters") == 0
    assert lethe.deadlines() == lethe.simulate(sent)


def test_a_channel_closed_by_consumer_timeout_during_a_long_task_is_recovered(
    on_own_rabbitmq,
):
    # consumer_timeout (30 minutes by default, worker/app.py) is lowered to 5 s, and the
    # channels checked every second: a task running longer has its channel closed by the
    # broker, and its message is delivered again.
    lethe, _ = on_own_rabbitmq("{consumer_timeout, 5000}, {channel_tick_interval, 1000}")
    worker = lethe.start_worker()
    at = "2026-01-05T10:00:00+01:00"
    store = sa.create_engine(lethe.env["LETHE_DATABASE_URL"])
    try:
        with store.begin() as ingestion:
            # the event's ingestion waits for this subject's lock: a long task
            ingestion.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended('customer:1', 0))")
            )
            lethe.python(
                "from worker.client import emit\n"
                f"emit('contact.made', subject='customer:1', id='long', occurred_at={at!r}, "
                "data={'direction': 'inbound'})"
            )
            wait_for(
                lambda: "PRECONDITION_FAILED" in lethe.logs[0].read_text(),
                90,
                "the broker to close the worker's channel",
                lethe.logs,
            )
    finally:
        store.dispose()
    # published after the close: stored only if the worker consumes again
    lethe.python(
        "from worker.client import emit\n"
        f"emit('contact.made', subject='customer:2', id='after', occurred_at={at!r}, "
        "data={'direction': 'inbound'})"
    )
    lethe.wait_event("after", 60)
    lethe.wait_event("long", 60)
    assert worker.poll() is None
    assert lethe.store_count("events") == 2 and lethe.store_count("dead_letters") == 0


class SilentNetwork(TcpProxy):
    """A relay that can go silent: it keeps every connection open and passes nothing
    either way (a cable pulled, a firewall dropping packets: no FIN, no RST), until
    `heal()` ends the connections it silenced and relays new ones again."""

    def __init__(self, target_port: int, target_host: str) -> None:
        super().__init__(target_port, target_host)
        self.silent = False

    def relay(
        self, chunk: bytes, source: socket.socket, sink: socket.socket, answers: bool
    ) -> None:
        if not self.silent:
            sink.sendall(chunk)

    def heal(self) -> None:
        silenced, self.sockets = self.sockets, []
        self.silent = False
        for s in silenced:
            s.close()


def test_a_network_that_goes_silent_is_noticed_within_the_heartbeat_and_recovered(
    rabbitmq_alone: Lethe,
):
    lethe = rabbitmq_alone
    heartbeat = 4
    server = urlsplit(lethe.env["LETHE_BROKER_URL"])
    network = SilentNetwork(server.port or 5672, server.hostname or "127.0.0.1")
    direct = lethe.env["LETHE_BROKER_URL"]
    at = "2026-01-05T10:00:00+01:00"

    def emit(event_id: str) -> None:  # the shop reaches the broker directly
        lethe.python(
            "from worker.client import emit\n"
            f"emit('contact.made', subject='customer:1', id={event_id!r}, occurred_at={at!r}, "
            "data={'direction': 'inbound'})"
        )

    try:
        lethe.env["LETHE_BROKER_HEARTBEAT"] = str(heartbeat)
        lethe.env["LETHE_BROKER_URL"] = urlunsplit(
            server._replace(netloc=f"{server.username}:{server.password}@127.0.0.1:{network.port}")
        )
        lethe.start_worker()
        lethe.env["LETHE_BROKER_URL"] = direct
        emit("before")
        lethe.wait_event("before")
        network.silent = True
        silenced = time.monotonic()
        emit("during")  # the broker may hand it to the worker it cannot reach
        wait_for(
            lambda: "Connection to broker lost" in lethe.logs[0].read_text(),
            60,
            "the worker to notice",
            lethe.logs,
        )
        noticed = time.monotonic() - silenced
        network.heal()
        lethe.wait_event("during", 60)
        emit("after")
        lethe.wait_event("after", 60)
    finally:
        network.close()
    # two missed beats, checked twice a beat (Celery's broker_heartbeat_checkrate)
    assert noticed < 3 * heartbeat + 2, noticed
    assert lethe.store_count("events") == 3 and lethe.store_count("dead_letters") == 0
