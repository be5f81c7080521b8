"""The log pipeline: structlog, one JSON object per line in production, readable in a terminal.

One processor list (`_processors`) serves structlog's own loggers and, through
`ProcessorFormatter`, every standard-library record: Celery's, kombu's and
uvicorn's. So `keep_personal_data_out` sees every line, whoever wrote it:
subjects become keyed hashes, event payloads are dropped, and addresses or
phone numbers that slipped into a message or a traceback are masked.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import structlog
from celery.signals import before_task_publish, setup_logging

from worker.domain.contact_details import PHONE_CANDIDATE, looks_like_phone
from worker.domain.hashing import subject_ref

_DROPPED = {"data", "payload", "email", "phone", "name", "address", "raw", "args", "kwargs"}
_REMOVED = "[removed]"
_EMAIL = re.compile(r"[^@\s'\"<>(),;:]+@[^@\s'\"<>(),;:]+\.[a-zA-Z]{2,}")
# SQLAlchemy appends a statement's bound values to its errors; they are row data.
_SQL_PARAMETERS = re.compile(r"\[parameters: .*?\](?=\s*(?:\(|$))", re.DOTALL)
# Celery names the task in its own messages: `Task lethe.ingest[<uuid>] received`.
_CELERY_TASK_ID = re.compile(r"\[([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\]")
_HANDLER_NAME = "lethe-structlog"

_secret: bytes = b""


def mask_personal_values(text: str) -> str:
    """The text with e-mail addresses, phone numbers and SQL bound values replaced."""
    text = _SQL_PARAMETERS.sub("[parameters removed]", text)
    text = _EMAIL.sub(_REMOVED, text)
    return PHONE_CANDIDATE.sub(
        lambda m: _REMOVED if looks_like_phone(m.group(0)) else m.group(0), text
    )


def keep_personal_data_out(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict:
    """Only keyed hashes of subjects leave; payloads never; stray addresses are masked."""
    for key in list(event_dict):
        value = event_dict[key]
        if key in _DROPPED:
            event_dict[key] = _REMOVED
        elif key == "subject" and isinstance(value, str):
            event_dict[key] = subject_ref(_secret, value)
        elif key == "subjects" and isinstance(value, list | tuple | set):
            event_dict[key] = len(value)
        elif isinstance(value, str):
            event_dict[key] = mask_personal_values(value)
    return event_dict


def add_task_id(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict:
    """The Celery task id on every line written while a task runs, or named in the message."""
    if "task_id" in event_dict:
        return event_dict
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    task_id = getattr(request, "id", None)
    if task_id is None and isinstance(event_dict.get("event"), str):
        found = _CELERY_TASK_ID.search(event_dict["event"])
        task_id = found.group(1) if found else None
    if task_id is not None:
        event_dict["task_id"] = task_id
    return event_dict


def _processors() -> list[Any]:
    # format_exc_info runs before the scrubber so a traceback's text is masked too.
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_task_id,
        structlog.processors.format_exc_info,
        keep_personal_data_out,
    ]


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def log_format(fmt: str | None = None) -> str:
    return (
        fmt or os.environ.get("LETHE_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    )


def configure_logging(secret: bytes, fmt: str | None = None, level: int | str = "INFO") -> None:
    """Configure once at start-up (calling again replaces the configuration).

    `fmt` is json or console (default: LETHE_LOG_FORMAT, else console on a terminal).
    """
    global _secret
    _secret = secret
    fmt = log_format(fmt)
    level = logging.getLevelName(level) if isinstance(level, str) else level
    processors = _processors()
    structlog.configure(
        processors=[*processors, _renderer(fmt)],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _renderer(fmt),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level)


@setup_logging.connect
def _celery_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connected, this receiver replaces Celery's own logging set-up, so worker,
    # beat and Flower records go through the same processors as ours.
    from worker.settings import current_settings

    configure_logging(current_settings().secret, level=loglevel or "INFO")


def _shown_argument(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return f"<{len(value)} items>"
    return f"<{type(value).__name__}>"


@before_task_publish.connect
def _hide_task_arguments(headers: dict | None = None, body: Any = None, **_: Any) -> None:
    # A task's arguments are events (subjects, data); task events, Flower and
    # Celery's own logs show `argsrepr`, so they get shapes instead of values.
    if headers is None or not isinstance(body, tuple | list) or len(body) < 2:
        return
    args, kwargs = body[0] or (), body[1] or {}
    headers["argsrepr"] = "(" + ", ".join(_shown_argument(a) for a in args) + ")"
    headers["kwargsrepr"] = (
        "{" + ", ".join(f"{k!r}: {_shown_argument(v)}" for k, v in kwargs.items()) + "}"
    )


log = structlog.get_logger("lethe")
