"""Redis under faults, as ops meet them: the server drops a client's connection (a Redis
restarted or failed over, `CLIENT KILL` by hand, a `timeout` or output-buffer limit, a load
balancer's cut) under a running worker, or between two of the shop's emits.

Real worker processes, the shared Redis and a real PostgreSQL store. The server is shared
with the other tests running meanwhile, so a test drops only connections of processes it
started: found by their local ports (/proc), not by anything the server says about them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from harness import REDIS_URL, Lethe, OwnRedis, wait_for

# The same shop code as on RabbitMQ: the story is the broker's, not the shop's.
from shop_process import emits_across_two_cuts, stream_across_a_worker_cut
from tcp_proxy import TcpProxy

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="finds a process's connections through /proc"
)

SERVER = urlsplit(REDIS_URL)


def _group(leader: int) -> list[int]:
    """The processes of a worker (started in a session of its own): the main process and its
    pool children."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'
        if int(stat.rsplit(")", 1)[1].split()[2]) == leader:
            pids.append(int(entry.name))
    return pids


def _connections(pids: list[int]) -> list[str]:
    """The `addr` (ip:port) under which Redis lists each connection these processes hold."""
    inodes = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir() if fds.exists() else ():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addrs = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == (SERVER.port or 6379):
            ip, port = local.split(":")
            # little-endian hex IPv4, as the kernel prints it
            addrs.append(f"{'.'.join(str(b) for b in bytes.fromhex(ip)[::-1])}:{int(port, 16)}")
    return addrs


def _kill(addrs: list[str]) -> None:
    """Close these connections from the server's side, as a Redis going away does."""
    server = redis.Redis.from_url(REDIS_URL)
    try:
        listed = {client["addr"]: client["id"] for client in server.client_list()}
        ids = [listed[addr] for addr in addrs if addr in listed]
        assert ids, f"none of {addrs} in CLIENT LIST"
        for client_id in ids:
            server.client_kill_filter(_id=client_id)
    finally:
        server.close()


def test_worker_cut_off_from_redis_reconnects_and_stores_every_event_once(
    distributed: Lethe, tmp_path: Path
):
    lethe = distributed
    # Redis's default visibility timeout (an hour), not the fixture's few seconds: what the
    # worker held when cut off must come back without waiting for it.
    del lethe.env["LETHE_VISIBILITY_TIMEOUT"]
    worker = lethe.start_worker()

    def cut() -> None:
        workers_connections = _connections(_group(worker.pid))
        assert workers_connections
        _kill(workers_connections)

    stream_across_a_worker_cut(lethe, worker, tmp_path, cut)


def test_shop_whose_connection_redis_dropped_sends_its_next_events_on_a_new_one(
    distributed: Lethe,
):
    def cut(shop: subprocess.Popen) -> None:
        # redis-py finds the connection closed before it publishes (kombu's publish retry
        # stands behind it)
        _kill(_connections([shop.pid]))

    emits_across_two_cuts(distributed, cut)


# The shop sends `count` events, one emit() each.
SEND = """
import sys
from worker.client import emit
first, count = int(sys.argv[1]), int(sys.argv[2])
for i in range(first, first + count):
    emit(
        "order.closed" if i % 3 else "contact.made",
        subject=f"customer:{i % 40}",
        id=f"s-{i}",
        occurred_at=f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+01:00",
        data={} if i % 3 else {"direction": "inbound"},
    )
"""
# The shop's emit() to a Redis that is gone: what it is told.
DOWN = """
from worker.client import BrokerUnavailable, emit
try:
    emit("contact.made", subject="customer:1", id="down", occurred_at="2024-01-01T10:00:00Z",
         data={"direction": "inbound"})
except BrokerUnavailable as error:
    print(error)
"""


def test_a_redis_killed_and_started_again_keeps_what_it_acknowledged(
    distributed: Lethe, own_redis: OwnRedis
):
    # docs/pipeline.md, Delivery guarantees: what Redis acknowledged is in its append-only file, so
    # a crash of the server process loses none of it; a worker waits for Redis to come
    # back. Redis is killed while no message is on its way to a worker: one Redis has
    # taken off the queue and not yet handed over can be lost (docs/pipeline.md).
    lethe = distributed
    lethe.env["LETHE_BROKER_URL"] = own_redis.url
    del lethe.env["LETHE_VISIBILITY_TIMEOUT"]  # nothing may come back by a timeout

    def send(first: int, count: int) -> None:
        command = [sys.executable, "-c", SEND, str(first), str(count)]
        subprocess.run(command, env=lethe.env, cwd=lethe.home, check=True, timeout=120)

    send(0, 60)
    own_redis.kill()  # 60 events queued, no worker yet
    said = lethe.python(DOWN).stdout
    assert said.startswith(f"cannot reach the broker at {own_redis.url} (") and (
        said.strip().endswith("start it or fix LETHE_BROKER_URL")
    ), said
    own_redis.start()
    worker = lethe.start_worker()
    lethe.wait_stored(60)

    own_redis.kill()  # the worker waits on an empty queue
    own_redis.start()
    send(60, 40)
    lethe.wait_stored(100)
    assert worker.poll() is None, "the worker died instead of waiting for Redis"
    assert "Connection to broker lost" in lethe.logs[0].read_text()
    assert lethe.store_count("events") == 100 and lethe.store_count("dead_letters") == 0


class VanishingRedis(TcpProxy):
    """A relay in front of the shared Redis that, once armed, plays a Redis dying just
    after it answered a worker's take (BLMOVE, worker/brokers/redis_transport.py): it
    passes that answer on whole, then nothing more either way, cuts every connection a
    moment later (once the worker has read the answer) and refuses new ones until
    `back()`. Redis itself stays up, so the message is off the queue exactly as a real
    crash would leave it."""

    def __init__(self, routing_key: bytes) -> None:
        super().__init__(SERVER.port or 6379, SERVER.hostname or "127.0.0.1")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.routing_key = routing_key
        self.armed = threading.Event()
        self.vanished = threading.Event()
        self.silent = False

    def relay(
        self, chunk: bytes, source: socket.socket, sink: socket.socket, answers: bool
    ) -> None:
        # the message itself, a bulk string naming its queue in its delivery_info
        if (
            answers
            and self.armed.is_set()
            and chunk.startswith(b"$")
            and (self.routing_key in chunk)
        ):
            while len(chunk) < _bulk_reply_length(chunk):
                chunk += source.recv(65536)
            self.silent = True  # before the answer: nothing the worker sends next passes
            sink.sendall(chunk)
            time.sleep(2)
            self.cut()
            self.armed.clear()
            self.vanished.set()
        elif not self.silent:
            sink.sendall(chunk)

    def back(self) -> None:
        self.silent = False
        self.restore()


def _bulk_reply_length(data: bytes) -> int:
    """Bytes in a bulk string reply ($<n>, the message), from its first bytes."""
    header, _ = data.split(b"\r\n", 1)
    return len(header) + 2 + int(header[1:]) + 2


def test_a_message_redis_hands_over_as_it_goes_away_is_still_stored(distributed: Lethe):
    # worker/brokers/redis_transport.py: BLMOVE took the message off the queue; recording it as
    # unacknowledged then fails, so the worker holds a copy, and gives it back (the other,
    # in its taking list, goes back too: stored once).
    lethe = distributed
    del lethe.env["LETHE_VISIBILITY_TIMEOUT"]  # nothing may come back by a timeout
    prefix = lethe.env["LETHE_QUEUE_PREFIX"]
    proxy = VanishingRedis(f'"{prefix}.events"'.encode())
    at = "2026-01-05T10:00:00+01:00"

    def emit(event_id: str, subject: str) -> None:
        # the shop reaches Redis directly; only the worker goes through the proxy
        lethe.python(
            "from worker.client import emit\n"
            f"emit('contact.made', subject={subject!r}, id={event_id!r}, occurred_at={at!r},"
            " data={'direction': 'inbound'})\n"
        )

    try:
        lethe.env["LETHE_BROKER_URL"] = proxy.url
        lethe.start_worker()
        lethe.env["LETHE_BROKER_URL"] = REDIS_URL
        emit("before", "customer:1")
        lethe.wait_event("before")
        proxy.armed.set()
        emit("handed-over", "customer:2")
        wait_for(proxy.vanished.is_set, 30, "the worker's take answered with the event")
        # Redis stays away until the worker has given up recording the message (redis-py
        # retries for a few seconds); a Redis back sooner takes the record, and then no
        # copy is at stake
        said = "Connection to broker lost"  # Celery's, once the worker has given up
        wait_for(lambda: said in lethe.logs[0].read_text(), 60, "the worker to give up")
        proxy.back()
        lethe.wait_event("handed-over", 60)  # not waiting for a next message to come
        emit("after", "customer:3")
        lethe.wait_event("after")
    finally:
        proxy.close()
    assert lethe.store_count("events") == 3 and lethe.store_count("dead_letters") == 0
    log = lethe.logs[0].read_text()
    assert "Redis went away as it handed over a message" in log
    assert "a message held while Redis was away is back on its queue" in log
