"""The embedded default's safety net for messages in flight.

kombu's filesystem transport removes a message file when a worker takes it,
before the task runs: a worker killed mid-task would lose it. So in embedded
mode each published batch is also written here first, removed once ingested,
and `lethe worker` re-publishes what is left at start. Re-ingesting is harmless
(event ids). With Redis or RabbitMQ the broker itself redelivers, and nothing is
spooled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.settings import Settings


def folder(settings: Settings) -> Path:
    return settings.home / "spool"


@contextmanager
def spooled(settings: Settings, task_id: str, messages: list[Any]) -> Iterator[None]:
    """Keep a copy of the batch while it is being published (embedded mode only)."""
    if not settings.embedded:
        yield
        return
    here = folder(settings)
    here.mkdir(parents=True, exist_ok=True)
    path = here / f"{task_id}.json"
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(messages), encoding="utf-8")
    os.replace(partial, path)
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def release(settings: Settings, task_id: str) -> None:
    if settings.embedded:
        (folder(settings) / f"{task_id}.json").unlink(missing_ok=True)
        (folder(settings) / f"{task_id}.sent").unlink(missing_ok=True)


def count_sending(settings: Settings, task_id: str) -> int:
    """Count one more sending of a spooled batch by a worker start; returns how many times
    it has now been sent (its first publication counts)."""
    counter = folder(settings) / f"{task_id}.sent"
    try:
        sent = int(counter.read_text(encoding="ascii")) + 1
    except (OSError, ValueError):
        sent = 2
    counter.write_text(str(sent), encoding="ascii")
    return sent


def pending(settings: Settings) -> Iterator[tuple[str, list[Any]]]:
    """Batches published but not yet ingested (or lost with a killed worker)."""
    here = folder(settings)
    if not here.exists():
        return
    for path in sorted(here.glob("*.json")):
        try:
            yield path.stem, json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
