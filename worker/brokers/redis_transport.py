"""The Redis broker: kombu's Redis transport, taking each message into a list of the
consumer's own, giving back a message Redis handed over just as it went away, and a dead
worker's messages within seconds (consumers.py).

kombu takes a message with BRPOP, which removes it from the queue, and only then
records it as unacknowledged, in a second round trip. When Redis dies between the
two (a crash, a restart: killed in the middle of a stream, 4 of 32 tries lost one
event), that second step fails and kombu dropped the message, whose only copy was
in the worker; a worker killed between the two lost it as well (bench/recovery.py:
6 messages in 13 kills). Here the worker takes with BLMOVE into its taking list, which
the record empties: a message is in a key of Redis at every moment, and what a lost
connection or a dead worker left in a taking list goes back to its queue (at the next
consume of the same process, or by a survivor). The worker also keeps in memory what it
could not record and pushes it back as soon as it reaches Redis again, before it
consumes anything: for a Redis restarted without the taking list (no persistence). Either
may give a message back twice: a duplicate, stored once.
"""

from __future__ import annotations

from queue import Empty
from time import monotonic, time
from typing import Any

import structlog
from kombu.transport import TRANSPORT_ALIASES, redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from worker.brokers.consumers import this_process

log = structlog.get_logger("lethe.broker")

# (message, exchange, routing key) taken off a queue and recorded nowhere: in this
# process only, until a channel of this process reaches Redis again
_held: list[tuple[dict[str, Any], str, str]] = []


class QoS(redis.QoS):
    """kombu's, with each delivery also recorded in this consumer's held set
    (worker/brokers/consumers.py), in the same pipeline as `unacked`."""

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        consumer = this_process(self.channel.global_keyprefix)
        # the message as BLMOVE put it in this consumer's taking list: out of it with the record
        taken, self.channel._taken = self.channel._taken, None
        try:
            with self.pipe_or_acquire() as pipe:
                pipe.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
                    self.unacked_key,
                    delivery_tag,
                    dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),
                ).sadd(consumer.held_key, delivery_tag)
                if taken is not None:
                    pipe.lrem(consumer.taking_key, 1, taken)
                pipe.execute()
                virtual.QoS.append(self, message, delivery_tag)
        except self.channel.connection_errors as error:
            delivery = message.delivery_info
            _held.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning(
                "Redis went away as it handed over a message: the worker holds it and "
                "gives it back to its queue once Redis is back",
                error=type(error).__name__,
            )
            raise  # the connection is lost: kombu and Celery reconnect as for any loss

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        # on ack, reject and restore alike; a tag taken over from a dead consumer is in
        # this consumer's held set by then
        held = this_process(self.channel.global_keyprefix).held_key
        return super()._remove_from_indices(delivery_tag, pipe).srem(held, delivery_tag)


class Channel(redis.Channel):
    """kombu's, taking each message with BLMOVE into this consumer's taking list instead of
    BRPOP: a message is in a key of Redis at every moment, so a worker killed between
    taking it and recording it leaves it where the next survivor finds it (consumers.py).
    It takes from the first queue of its round (the events queue, a worker's only one) and
    from priority 0 alone: Lethe sends no message with a priority."""

    QoS = QoS
    _taken: bytes | None = None
    _taking_from: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # connects, or raises as kombu does
        self._give_back_held()

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if timeout is None:
            timeout = self.brpop_timeout
        self._taking_from = queues[0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        source = self.global_keyprefix + self._q_for_pri(queues[0], 0)
        taking = this_process(self.global_keyprefix).taking_key
        self.client.connection.send_command("BLMOVE", source, taking, "RIGHT", "LEFT", timeout or 0)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next round reconnects
                raise
            if not item:
                raise Empty()
            self._queue_cycle.rotate(self._taking_from)
            self._taken = item
            self.connection._deliver(loads(bytes_to_str(item)), self._taking_from)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _poll_error(self, type: str, **options: Any) -> Any:
        if type == "BRPOP":
            return self.client.parse_response(self.client.connection, "BLMOVE")
        return super()._poll_error(type, **options)

    def give_back_taken(self, item: bytes) -> None:
        """A message from this consumer's taking list back on its queue, and out of the list."""
        payload = loads(bytes_to_str(item))
        info = payload["properties"]["delivery_info"]
        taking = this_process(self.global_keyprefix).taking_key
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            self._do_restore_message(payload, info["exchange"], info["routing_key"], pipe)
            pipe.lrem(taking, 1, item)
            pipe.execute()

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        if not no_ack:
            # taken by this process on a connection now lost, and never delivered
            with self.conn_or_acquire() as client:
                left = client.lrange(this_process(self.global_keyprefix).taking_key, 0, -1)
            for item in left:
                self.give_back_taken(item)
        tag = super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        if not no_ack:
            # a process that takes messages to acknowledge (a worker; not `celery inspect`'s
            # replies, nor Flower's events) beats, and gives back dead consumers' deliveries
            this_process(self.global_keyprefix).consuming(self)
        return tag

    def close(self) -> None:
        this_process(self.global_keyprefix).closed(self)
        super().close()

    def _give_back_held(self) -> None:
        while _held:
            payload, exchange, routing_key = _held[0]
            with self.conn_or_acquire() as client, client.pipeline() as pipe:
                self._do_restore_message(payload, exchange, routing_key, pipe)
                pipe.execute()
            _held.pop(0)
            log.warning("a message held while Redis was away is back on its queue")


class Transport(redis.Transport):
    Channel = Channel


# By a name of its own rather than its class path, so that Celery's log lines read
# "Connected to lethe-redis://..." (a URL's scheme is the transport's name there)
TRANSPORT = "lethe-redis"
TRANSPORT_ALIASES.setdefault(TRANSPORT, f"{__name__}:{Transport.__name__}")
