"""The log pipeline: structlog, one JSON object per line in production, readable in a terminal.

`keep_personal_data_out` is in the processor list so no call site can forget it:
subjects become keyed hashes, event payloads and free values are dropped.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from worker.hashing import subject_ref

_DROPPED = {"data", "payload", "email", "phone", "name", "address", "raw"}
_secret: bytes = b""


def keep_personal_data_out(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict:
    for key in list(event_dict):
        if key in _DROPPED:
            event_dict[key] = "[removed]"
        elif key == "subject" and isinstance(event_dict[key], str):
            event_dict[key] = subject_ref(_secret, event_dict[key])
        elif key == "subjects" and isinstance(event_dict[key], list | tuple | set):
            event_dict[key] = len(event_dict[key])
    return event_dict


def configure_logging(secret: bytes, fmt: str | None = None) -> None:
    """Configure once at start-up; `fmt` is json or console (default: console on a terminal)."""
    global _secret
    _secret = secret
    fmt = (
        fmt or os.environ.get("LETHE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    )
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            keep_personal_data_out,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


log = structlog.get_logger("lethe")
