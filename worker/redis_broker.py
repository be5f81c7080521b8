"""The Redis broker: kombu's Redis transport, keeping a message Redis handed over just as
it went away.

kombu takes a message with BRPOP, which removes it from the queue, and only then
records it as unacknowledged (a second round trip). When Redis dies between the two
(a crash, a restart: 2 runs in 12 of tests/integration/test_redis_faults.py lost one
event each), kombu raised out of that second step and dropped the message, the only
copy of which was in the worker. Here the worker keeps it in memory and runs it
like the others; ingestion stores it in the store, whose database is not Redis.
What this cannot save: the same message if its worker also dies before ingesting it,
and a BRPOP reply lost on the wire (the connection cut while the reply travelled).
"""

from __future__ import annotations

from typing import Any

import structlog
from kombu.transport import redis, virtual

log = structlog.get_logger("lethe.broker")


class QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors as error:
            # redis.QoS records the message in Redis, then in memory; the first failed
            virtual.QoS.append(self, message, delivery_tag)
            log.warning(
                "Redis went away as it handed over a message: the message is run from "
                "the worker's memory, and is not given back to the queue if the worker "
                "stops before running it",
                error=type(error).__name__,
            )


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:{Transport.__name__}"
