"""The Redis broker: kombu's Redis transport, giving back a message Redis handed over
just as it went away, and a dead worker's messages within seconds (consumers.py).

kombu takes a message with BRPOP, which removes it from the queue, and only then
records it as unacknowledged, in a second round trip. When Redis dies between the
two (a crash, a restart: killed in the middle of a stream, 4 of 32 tries lost one
event), that second step fails and kombu dropped the message, whose only copy was
in the worker. Here the worker keeps it and pushes it back onto its queue as soon
as it has a connection to Redis again, before it consumes anything; it is then
delivered as any message is (if the record had in fact reached Redis, the message
also comes back after the visibility timeout: a duplicate, stored once). What this
cannot save: the same message if the worker also stops before Redis is back, and
Redis dying after it took the message off the queue but before its answer left.
"""

from __future__ import annotations

from time import time
from typing import Any

import structlog
from kombu.transport import TRANSPORT_ALIASES, redis, virtual
from kombu.utils.json import dumps

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
        held = this_process(self.channel.global_keyprefix).held_key
        try:
            with self.pipe_or_acquire() as pipe:
                pipe.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
                    self.unacked_key,
                    delivery_tag,
                    dumps([message._raw, delivery["exchange"], delivery["routing_key"]]),
                ).sadd(held, delivery_tag).execute()
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
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # connects, or raises as kombu does
        self._give_back_held()

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
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
