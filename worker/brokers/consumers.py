"""Redis consumers' liveness: each worker process's heartbeat, the deliveries it holds, and
the return of a dead one's deliveries to their queues.

kombu's Redis transport records a message a worker took in one `unacked` hash shared by
every worker, and gives it back only once it is older than the visibility timeout (an hour
by default, as it must outlast the longest task): a worker killed with SIGKILL, or whose
machine went away, parked its messages for that hour (measured in issue 20: four kills in a
stream of 20,000 events left 15,516 lifecycles waiting four minutes later). Here each
consuming process is a consumer with an id that

- records each delivery tag it takes in a set of its own (`lethe.held.<id>`, written in the
  pipeline that writes `unacked`, removed with it on ack, reject or restore);
- beats every HEARTBEAT_SECONDS from a thread of its own (a worker's event loop or a task
  may block for long; a thread beats meanwhile): its score in the `lethe.consumers` sorted
  set is Redis's own clock, so the machines' clocks need not agree; the same beat pushes
  back the visibility timeout of the deliveries it still holds in memory, so a live worker's
  long task (an hour's sweep) is never given to another;
- at start and on every beat, takes over, in one Lua script (so two workers never take the
  same consumer), the held set of every consumer silent for DEAD_AFTER_SECONDS, and gives
  each of its deliveries back with kombu's own restore (a transaction on `unacked`: a
  delivery goes back once even if two workers try it).

A dead consumer's messages are thus back within DEAD_AFTER_SECONDS + HEARTBEAT_SECONDS
of its last beat (bench/recovery.py measures it). Duplicates are harmless: events carry
ids. A worker that is alive but cut off from Redis for longer than DEAD_AFTER_SECONDS
is taken for dead and its deliveries run again elsewhere. The visibility timeout stays the
last resort for anything recorded in no held set (a worker of an older Lethe, a delivery
whose ack was lost with the connection).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

import redis
import structlog

log = structlog.get_logger("lethe.broker")

# A consumer silent this long is dead. Well above a beat's interval so that a slow beat (a
# busy machine, a Redis failover of a few seconds) is not taken for a death.
DEAD_AFTER_SECONDS = 20
HEARTBEAT_SECONDS = 5

CONSUMERS_KEY = "lethe.consumers"
HELD_KEY = "lethe.held."
# A message a consumer took off its queue (BLMOVE, redis_transport.py) and has not yet
# recorded in `unacked`: with plain BRPOP it was in no key of Redis for that round trip,
# and lost if the worker died then (bench/recovery.py lost 6 messages in 13 kills).
TAKING_KEY = "lethe.taking."

# KEYS: consumers zset, this consumer's held set. ARGV: consumer id.
# Redis's clock, not the worker's: the machines' clocks need not agree.
_BEAT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1e6, ARGV[1])
return 1
"""

# KEYS: consumers zset, this consumer's held set.
# ARGV: this consumer's id, dead after (s), held-set key prefix, taking-list key prefix.
# KEYS[3]: this consumer's taking list.
# Moves every dead consumer's held tags into this consumer's held set, and what it was
# taking into this consumer's taking list (so that, should this one die before it gave them
# all back, the next survivor takes them on) and forgets the dead consumer; returns how
# many consumers were dead, the tags and the messages taken.
_TAKE_OVER = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local taken = {}
local messages = {}
local consumers = 0
for _, id in ipairs(dead) do
  if id ~= ARGV[1] then
    local held = ARGV[3] .. id
    for _, tag in ipairs(redis.call('SMEMBERS', held)) do
      redis.call('SADD', KEYS[2], tag)
      table.insert(taken, tag)
    end
    redis.call('DEL', held)
    local taking = ARGV[4] .. id
    for _, message in ipairs(redis.call('LRANGE', taking, 0, -1)) do
      redis.call('RPUSH', KEYS[3], message)
      table.insert(messages, message)
    end
    redis.call('DEL', taking)
    redis.call('ZREM', KEYS[1], id)
    consumers = consumers + 1
  end
end
return {consumers, taken, messages}
"""


@dataclass(frozen=True)
class Orphans:
    """Deliveries held by consumers whose heartbeat stopped, as `lethe status` and /metrics
    show them."""

    messages: int
    oldest_seconds: float  # since the silent consumer holding them last beat; 0 when none


def raw_client(channel: Any) -> redis.Redis:
    """A client on the channel's connection pool that adds no key prefix (kombu's adds it
    to the first key of a script only)."""
    return redis.Redis(connection_pool=channel.client.connection_pool)


def orphans(client: redis.Redis, prefix: str, dead_after: float = DEAD_AFTER_SECONDS) -> Orphans:
    """What silent consumers hold and still unacknowledged (read only; a running worker
    gives them back within HEARTBEAT_SECONDS)."""
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    silent = client.zrangebyscore(prefix + CONSUMERS_KEY, "-inf", now - dead_after, withscores=True)
    messages, oldest = 0, 0.0
    for consumer, last_beat in silent:
        tags = list(client.smembers(prefix + HELD_KEY + consumer.decode()))
        pipe = client.pipeline(transaction=False)
        for tag in tags:
            pipe.hexists(prefix + "unacked", tag)
        pipe.llen(prefix + TAKING_KEY + consumer.decode())  # taken, not yet recorded
        *present, taking = pipe.execute()
        held = sum(1 for found in present if found) + int(taking)
        if held:
            messages += held
            oldest = max(oldest, now - last_beat)
    return Orphans(messages, oldest)


class Consumer:
    """This process as a consumer: its id, its held set, and the thread that beats for it
    and gives back dead consumers' deliveries."""

    def __init__(self, prefix: str) -> None:
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.prefix = prefix
        self.pid = os.getpid()
        # the channels consuming in this process: the beat keeps their deliveries
        self.channels: weakref.WeakSet[Any] = weakref.WeakSet()
        # never set in a worker (a daemon thread ends with its process); for tests and tools
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._scripts: dict[str, Any] = {}

    @property
    def held_key(self) -> str:
        """Without the install's prefix: kombu's client adds it to SADD and SREM."""
        return HELD_KEY + self.id

    @property
    def taking_key(self) -> str:
        """With the install's prefix (kombu adds none to BLMOVE, LRANGE or LREM)."""
        return self.prefix + TAKING_KEY + self.id

    def consuming(self, channel: Any) -> None:
        self.channels.add(channel)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="lethe-consumer-heartbeat", daemon=True
            )
            self._thread.start()

    def closed(self, channel: Any) -> None:
        self.channels.discard(channel)

    def _channel(self) -> Any | None:
        for channel in list(self.channels):
            if not getattr(channel, "closed", False):
                return channel
        return None

    def _run(self) -> None:
        # the first round at once: a worker started after a crash gives its messages back
        while not self._stop.is_set():
            channel = self._channel()  # none between a lost connection and the next
            try:
                if channel is not None:
                    self.beat(channel)
                    self.take_over(channel)
            except Exception as error:  # Redis away: the worker reconnects on its own
                log.warning("consumer heartbeat failed, tried again", error=type(error).__name__)
            self._stop.wait(HEARTBEAT_SECONDS)

    def _script(self, client: redis.Redis, source: str) -> Any:
        if source not in self._scripts:
            self._scripts[source] = client.register_script(source)
        return self._scripts[source]

    def beat(self, channel: Any) -> None:
        client = raw_client(channel)
        keys = [self.prefix + CONSUMERS_KEY, self.prefix + self.held_key]
        self._script(client, _BEAT)(keys=keys, args=[self.id])
        tags = self._delivered()
        if tags:
            # the worker's own clock, as kombu's restore_visible compares it with its own;
            # XX: a delivery acknowledged meanwhile is not put back in the index
            client.zadd(
                self.prefix + channel.unacked_index_key, dict.fromkeys(tags, time.time()), xx=True
            )

    def _delivered(self) -> list[str]:
        """Tags this process holds in memory (kombu's QoS, mutated by the event loop)."""
        for _ in range(5):
            try:
                return [tag for ch in list(self.channels) for tag in list(ch.qos._delivered)]
            except RuntimeError:  # changed size while copied: copy again
                continue
        return []

    def take_over(self, channel: Any) -> int:
        """Give back every silent consumer's deliveries; returns how many went back."""
        client = raw_client(channel)
        keys = [self.prefix + CONSUMERS_KEY, self.prefix + self.held_key, self.taking_key]
        args = [self.id, DEAD_AFTER_SECONDS, self.prefix + HELD_KEY, self.prefix + TAKING_KEY]
        consumers, tags, taking = self._script(client, _TAKE_OVER)(keys=keys, args=args)
        for message in taking:
            channel.give_back_taken(message)
        given_back = len(taking)
        for tag in tags:
            tag = tag.decode() if isinstance(tag, bytes) else tag
            present = client.hexists(self.prefix + channel.unacked_key, tag)
            # kombu's restore: the message back on its queue, out of `unacked` and of
            # this consumer's held set, in one transaction
            channel.qos.restore_by_tag(tag)
            given_back += bool(present)
        if given_back:
            log.warning(
                "gave back the messages of workers whose heartbeat stopped",
                consumers=int(consumers),
                messages=given_back,
            )
        return given_back


_consumer: list[Consumer] = []


def this_process(prefix: str) -> Consumer:
    """This process's consumer (a new one in a forked child: the parent's id is its own)."""
    if not _consumer or _consumer[0].pid != os.getpid() or _consumer[0].prefix != prefix:
        _consumer[:] = [Consumer(prefix)]
    return _consumer[0]


def orphans_at(url: str, transport_options: dict[str, Any], timeout: float = 5.0) -> Orphans:
    """`orphans` on the Redis at `url`, under the install's key prefix (in the options)."""
    from kombu import Connection

    with Connection(
        url, transport_options=transport_options, connect_timeout=timeout
    ) as connection:
        channel = connection.default_channel
        return orphans(raw_client(channel), channel.global_keyprefix)
