"""RabbitMQ under faults, as ops meet them: the broker drops a connection (a node restarted
or put in maintenance, a connection closed from the management UI, a load balancer's cut),
or is not there at all when the shop emits.

Real worker processes, a real RabbitMQ and a real PostgreSQL store. Each test that closes
connections has a vhost of its own (`rabbitmq_alone`), and closes only connections in it:
the server is shared with the other tests running meanwhile.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from harness import RABBITMQCTL, Lethe, rabbitmqctl
from shop_process import emits_across_two_cuts, stream_across_a_worker_cut

from worker.app import AMQP_CONNECT_TIMEOUT


def _connections(vhost: str) -> list[str]:
    """The broker's ids of the connections open in this vhost."""
    rows = rabbitmqctl("list_connections", "--silent", "vhost", "pid").splitlines()
    return [row.split("\t")[1] for row in rows if row.split("\t")[0] == vhost]


def _close(connections: list[str], reason: str) -> None:
    """Close these connections from the broker's side, all at once, as a node going down
    does (one rabbitmqctl each, run side by side: each takes most of a second)."""
    closing = [
        subprocess.Popen([RABBITMQCTL, "--quiet", "close_connection", pid, reason])
        for pid in connections
    ]
    assert all(process.wait(timeout=60) == 0 for process in closing)


def test_worker_cut_off_by_the_broker_reconnects_and_stores_every_event_once(
    rabbitmq_alone: Lethe, rabbitmq_vhost: str, tmp_path: Path
):
    lethe = rabbitmq_alone
    worker = lethe.start_worker()
    # The shop has not connected yet: every connection in our vhost is the worker's.
    workers_connections = _connections(rabbitmq_vhost)
    assert workers_connections
    stream_across_a_worker_cut(
        lethe,
        worker,
        tmp_path,
        lambda: _close(workers_connections, "test: the worker's connection is lost"),
    )


def test_shop_whose_connection_the_broker_dropped_sends_its_next_events_on_a_new_one(
    rabbitmq_alone: Lethe, rabbitmq_vhost: str
):
    def cut(_shop: subprocess.Popen) -> None:
        _close(_connections(rabbitmq_vhost), "test: the shop's connection is lost")

    emits_across_two_cuts(rabbitmq_alone, cut)


def _port_nobody_listens_on() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


EMIT_ONCE = """
import time
from worker.client import BrokerUnavailable, emit
start = time.monotonic()
try:
    emit("contact.made", subject="customer:1", data={"direction": "outbound"})
except BrokerUnavailable as exc:
    print(f"{time.monotonic() - start:.1f}")
    print(exc)
"""


@pytest.mark.parametrize(
    "url, shown, why",
    [
        (
            "amqp://guest:guest@127.0.0.1:{port}//",
            "amqp://guest:***@127.0.0.1:{port}//",
            "Connection refused",
        ),
        ("amqp://guest:wrong@{server}//", "amqp://guest:***@{server}//", "ACCESS_REFUSED"),
        (
            "amqp://guest:guest@{server}/no-such-vhost",
            "amqp://guest:***@{server}/no-such-vhost",
            "NOT_ALLOWED",
        ),
    ],
    ids=["nothing-listens", "login-refused", "vhost-missing"],
)
def test_emit_to_a_rabbitmq_it_cannot_use_raises_broker_unavailable_within_the_connect_timeout(
    embedded: Lethe, rabbitmq_server: str, url: str, shown: str, why: str
):
    # The shop's code catches BrokerUnavailable (a ConnectionError) to keep the event and
    # send it again: any other exception, or a wait, would break its checkout instead.
    server = urlsplit(rabbitmq_server)
    place = {"port": _port_nobody_listens_on(), "server": f"{server.hostname}:{server.port}"}
    embedded.env["LETHE_BROKER_URL"] = url.format(**place)
    embedded.env["LETHE_SECRET"] = "a-secret-long-enough-for-tests"
    result = embedded.python(EMIT_ONCE, check=False)
    assert result.stdout, f"emit() did not raise BrokerUnavailable:\n{result.stderr}"
    seconds, message = result.stdout.split("\n", 1)
    assert float(seconds) < AMQP_CONNECT_TIMEOUT, message
    assert f"cannot reach the broker at {shown.format(**place)}" in message
    assert why in message
    assert "start it or fix LETHE_BROKER_URL" in message
