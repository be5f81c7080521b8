"""Redis under faults, as ops meet them: the server drops a client's connection (a Redis
restarted or failed over, `CLIENT KILL` by hand, a `timeout` or output-buffer limit, a load
balancer's cut) under a running worker, or between two of the shop's emits.

Real worker processes, the shared Redis and a real PostgreSQL store. The server is shared
with the other tests running meanwhile, so a test drops only connections of processes it
started: found by their local ports (/proc), not by anything the server says about them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from harness import REDIS_URL, Lethe

# The same shop code as on RabbitMQ: the story is the broker's, not the shop's.
from shop_process import emits_across_two_cuts, stream_across_a_worker_cut

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
