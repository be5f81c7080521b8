"""The embedded default's safety net for messages in flight.

kombu's filesystem transport removes a message file when a worker takes it,
before the task runs: a worker killed mid-task would lose it. So in embedded
mode each published batch is also written here first, removed once ingested,
and `lethe worker` re-publishes what is left at start. Re-ingesting is harmless
(event ids). With Redis the broker itself redelivers, and nothing is spooled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.settings import Settings


def _folder(settings: Settings) -> Path:
    return settings.home / "spool"


@contextmanager
def spooled(settings: Settings, task_id: str, messages: list[Any]) -> Iterator[None]:
    """Keep a copy of the batch while it is being published (embedded mode only)."""
    if not settings.embedded:
        yield
        return
    folder = _folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task_id}.json"
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
        (_folder(settings) / f"{task_id}.json").unlink(missing_ok=True)
        # how many times a worker start sent it again (worker/embedded_start.py)
        (_folder(settings) / f"{task_id}.sent").unlink(missing_ok=True)


def pending(settings: Settings) -> Iterator[tuple[str, list[Any]]]:
    """Batches published but not yet ingested (or lost with a killed worker)."""
    folder = _folder(settings)
    if not folder.exists():
        return
    for path in sorted(folder.glob("*.json")):
        try:
            yield path.stem, json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
