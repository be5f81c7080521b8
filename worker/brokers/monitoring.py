"""Celery's monitoring events (worker heartbeats, `--task-events` for Flower), sent without
RabbitMQ's publisher confirms.

Lethe asks RabbitMQ to confirm every publish (worker/app.py), so that the shop's emit()
returns only once the broker holds the event. A worker's monitoring events share that
setting, and Celery sends them from the worker's event loop: on a network that goes silent
without a close, each one waited for a confirm that never came (LETHE's read timeout, 10 s)
and held the loop meanwhile, AMQP heartbeat checks included, so the worker never noticed
the lost link (measured: still blind 60 s after the cut; tests/integration/
test_rabbitmq_outages.py). An event lost with a connection costs a monitoring dot, no data:
they go out unconfirmed, on a connection of their own as before.
"""

from __future__ import annotations

from typing import Any

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher


class UnconfirmedDispatcher(EventDispatcher):
    def __init__(self, connection: Any = None, *args: Any, **kwargs: Any) -> None:
        if connection is not None and connection.transport_options.get("confirm_publish"):
            # a clone, not yet connected: the Events step closes whichever it is given back
            connection = connection.clone(
                transport_options={**connection.transport_options, "confirm_publish": False}
            )
        super().__init__(connection, *args, **kwargs)


class UnconfirmedEvents(Events):
    dispatcher_cls = UnconfirmedDispatcher
