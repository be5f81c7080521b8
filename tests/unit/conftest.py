from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from worker.domain.events import Event, parse_event
from worker.domain.register import Register
from worker.domain.register_file import default_register_path, load_register


@pytest.fixture(scope="session")
def register() -> Register:
    """The shipped NEGOMARKETS register, as the worker loads it."""
    return load_register(default_register_path())


@pytest.fixture
def event(register: Register) -> Callable[..., Event]:
    """An event as the shop would send it, checked by the real event schema."""
    ids = itertools.count(1)

    def make(event_type: str, subject: str, at: str, **data: Any) -> Event:
        raw = {
            "id": f"ev-{next(ids):04d}",
            "type": event_type,
            "subject": subject,
            "occurred_at": at,
            "data": data,
        }
        return parse_event(raw, register)

    return make
