"""What the shop imports: `emit` and `emit_many`. No task code is imported.

Events are checked here, before they leave the shop, so a typo fails in the
shop's own code instead of becoming a dead letter. Values that are only needed
for matching later (a newsletter address) leave as keyed hashes, never as text.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import pendulum
from kombu.exceptions import KombuError

from worker.domain.contact_details import is_contact_detail, value_has_contact_details
from worker.domain.events import Event, EventRefused, parse_event
from worker.domain.hashing import value_hash, value_hashes
from worker.domain.register import Register
from worker.domain.register_file import RegisterError, RegisterProblem, load_register
from worker.settings import Settings, current_settings, safe_url

BATCH_SIZE = 500

# How deep `data` is searched for personal data; deeper data is refused.
_MAX_DEPTH = 8


class BrokerUnavailable(ConnectionError):
    """The queue cannot be reached.

    From `emit`: the event may not have left the shop; send it again with the same id.
    From `emit_many`: `sent` events (ids in `sent_ids`) were sent before the failure, every
    accepted event before input position `resume_at` (1-based, as `EmitReport.refused`
    counts); the events from `resume_at` on were not, or not for certain: send them again.
    `refused` lists the events refused before the failure. An event id sent twice is
    stored once, so resending the batch that was in flight is harmless when it has ids.
    """

    def __init__(
        self,
        message: str,
        *,
        sent_ids: Sequence[str] = (),
        resume_at: int | None = None,
        refused: Sequence[tuple[int, str]] = (),
    ):
        super().__init__(message)
        self.sent_ids = list(sent_ids)
        self.sent = len(self.sent_ids)
        self.resume_at = resume_at
        self.refused = list(refused)


class StoreUnavailable(ConnectionError):
    """Lethe's store cannot be read (`is_suppressed`): treat the address as suppressed."""


class EventInvalid(ValueError):
    """The event was refused before sending; the message says which field and why."""


@dataclass
class EmitReport:
    """What `emit_many` did: how many sent, the refused by input position (1-based) with
    the reason, and the ids of the sent events in the order they were sent."""

    sent: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


class RegisterUnusable(EventInvalid, RegisterError):
    """LETHE_REGISTER cannot be loaded, so no event can be checked; `problems` says where.

    An EventInvalid, so `lethe emit` and shop code that already stop on a refused
    event stop here too; a RegisterError, for code that catches the register's own error.
    """

    def __init__(self, problems: list[RegisterProblem]):
        self.problems = problems
        ValueError.__init__(
            self,
            "the register (LETHE_REGISTER) cannot be loaded, so no event can be checked; "
            "fix it (`lethe register check` lists the same problems):\n"
            + "\n".join(str(p) for p in problems),
        )


@lru_cache(maxsize=4)
def _register(path: str) -> Register:
    try:
        return load_register(path)
    except RegisterError as exc:
        raise RegisterUnusable(exc.problems) from None


def _app():
    from worker.app import app

    return app


def emit(
    type: str,
    *,
    subject: str,
    occurred_at: datetime | str | None = None,
    id: str | None = None,
    data: Mapping[str, Any] | None = None,
    match: Mapping[str, str] | None = None,
) -> str:
    """Send one event; returns its id. Pass your own `id` to make retries harmless.

    `occurred_at`: a timezone-aware datetime or an ISO 8601 text with its UTC offset;
    None means now. `match` values leave as keyed hashes (`email` -> `email_hash`).
    """
    event = build_event(
        type, subject=subject, occurred_at=occurred_at, id=id, data=data, match=match
    )
    _publish([event.to_message()], one=True)
    return event.id


def emit_many(
    events: Iterable[Mapping[str, Any] | str],
    *,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> EmitReport:
    """Check and send many events in batches.

    Each event is a dict of `emit`'s arguments (`type`, `subject`, and optionally
    `occurred_at`, `id`, `data`, `match`), checked the same way, or a JSON text in the
    event format (`id`, `type`, `subject`, `occurred_at`, `data`: all but `data` required).
    Refused ones are reported by position (1-based) and not sent.

    Raises BrokerUnavailable when the queue fails; its `sent_ids` and `resume_at` say which
    events were sent and where to resume.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of events, 1 or more: {batch_size!r}")
    settings = current_settings()
    register = _register(str(settings.register_path))
    report = EmitReport()
    batch: list[tuple[int, dict[str, Any]]] = []
    for position, raw in enumerate(events, start=1):
        try:
            if isinstance(raw, Mapping):
                event = _checked(raw, register, settings.secret)
            else:
                event = parse_event(raw, register)
                _refuse_plain_personal_data(event.data)
        except (EventRefused, EventInvalid) as exc:
            report.refused.append((position, str(exc)))
            continue
        batch.append((position, event.to_message()))
        if len(batch) >= batch_size:
            _send_batch(batch, report, progress)
            batch = []
    if batch:
        _send_batch(batch, report, progress)
    return report


def _send_batch(
    batch: list[tuple[int, dict[str, Any]]],
    report: EmitReport,
    progress: Callable[[int], None] | None,
) -> None:
    try:
        _publish([message for _, message in batch])
    except BrokerUnavailable as exc:
        resume_at = batch[0][0]
        # Counts and positions only: ids are the shop's and may say more than they should.
        raise BrokerUnavailable(
            f"{exc}. {report.sent} event(s) were sent before the failure: every accepted "
            f"event before input position {resume_at}; the events from position {resume_at} "
            "on were not, or not for certain: send them again (an event id sent twice is "
            "stored once)",
            sent_ids=report.ids,
            resume_at=resume_at,
            refused=report.refused,
        ) from None
    report.sent += len(batch)
    report.ids.extend(message["id"] for _, message in batch)
    if progress:
        progress(len(batch))


def build_event(
    type: str,
    *,
    subject: str,
    occurred_at: datetime | str | None = None,
    id: str | None = None,
    data: Mapping[str, Any] | None = None,
    match: Mapping[str, str] | None = None,
) -> Event:
    """A checked event; `match` values become keyed hashes (`email` -> `email_hash`)."""
    settings = current_settings()
    fields = {
        "type": type,
        "subject": subject,
        "occurred_at": occurred_at,
        "id": id,
        "data": data,
        "match": match,
    }
    return _checked(fields, _register(str(settings.register_path)), settings.secret)


def _checked(fields: Mapping[str, Any], register: Register, secret: bytes) -> Event:
    """`emit`'s arguments, or one of `emit_many`'s dicts, as a checked event: the one path
    both take, so an event means the same whichever function sends it."""
    raw = dict(fields)
    match = raw.pop("match", None)
    data = raw.get("data")
    if data is None:
        data = {}
    if isinstance(data, Mapping):
        payload = dict(data)
        _refuse_plain_personal_data(payload)
        payload.update(_hashed(match, secret))
        raw["data"] = payload
    # any other data is refused by parse_event below, with the event format's own words
    if raw.get("id") is None:
        raw["id"] = str(uuid.uuid4())
    raw["occurred_at"] = _instant_text(raw.get("occurred_at"))
    try:
        return parse_event(raw, register)
    except EventRefused as exc:
        raise EventInvalid(str(exc)) from None


def _hashed(match: Any, secret: bytes) -> dict[str, str]:
    if match is None:
        return {}
    if not isinstance(match, Mapping):
        raise EventInvalid(
            f"match must map names to values (match={{'email': ...}}), "
            f"not {match.__class__.__name__}"
        )
    hashes = {}
    for name, value in match.items():
        if not isinstance(value, str):
            raise EventInvalid(f"match[{name!r}] must be a string, not {value.__class__.__name__}")
        hashes[f"{name}_hash"] = value_hash(secret, value)
    return hashes


def _instant_text(when: Any) -> str:
    """`occurred_at` as the event format's text; only a missing time means now (an empty
    one is a mistake, refused by parse_event)."""
    if when is None:
        return pendulum.now("UTC").isoformat()
    if isinstance(when, str):
        return when
    if isinstance(when, datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            # Not read as local time: a deadline would then move with the machine's zone.
            raise EventInvalid(
                "occurred_at is a naive datetime (no time zone): give it one, e.g. "
                "datetime.now(timezone.utc) or datetime(..., tzinfo=ZoneInfo('Europe/Paris'))"
            )
        return when.isoformat()
    raise EventInvalid(
        "occurred_at must be a timezone-aware datetime or an ISO 8601 text with a UTC "
        f"offset, not {when.__class__.__name__}"
    )


def _refuse_plain_personal_data(data: Mapping[str, Any]) -> None:
    # The queue and the event log must not become a second copy of the shop's
    # customer file: an address or phone number in `data` is refused outright,
    # at the top level or nested (`{"contact": {"email": ...}}`, `{"phones": [...]}`).
    for path, key, value in _strings(data, "data", 0):
        if key.endswith("_hash"):
            continue
        # a note ("call back on 06 11 22 33 44") carries a number inside its words
        if value_has_contact_details(value):
            raise EventInvalid(
                f"{path} looks like an e-mail address or phone number: send only the "
                f"shop's ids, or pass it as match={{'{key}': ...}} to send its keyed hash"
            )


def _strings(value: Any, path: str, depth: int) -> Iterator[tuple[str, str, str]]:
    """Every string under `value`, as (path such as data.contact.email, its key, the string)."""
    if depth > _MAX_DEPTH:
        # nothing a shop sends is this deep; refusing beats leaving part unchecked
        raise EventInvalid(
            f"{path} is nested more than {_MAX_DEPTH} levels deep: flatten the event's data"
        )
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            if is_contact_detail(name):
                # checked before the key is named in any message below it
                raise EventInvalid(
                    f"a key under {path} looks like an e-mail address or phone number: "
                    "key the data by the shop's ids instead"
                )
            if isinstance(item, str):
                yield f"{path}.{name}", name, item
            else:
                yield from _strings(item, f"{path}.{name}", depth + 1)
    elif isinstance(value, list | tuple):
        key = path.rsplit(".", 1)[-1].split("[", 1)[0]
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield f"{path}[{index}]", key, item
            else:
                yield from _strings(item, f"{path}[{index}]", depth + 1)


def _publish(messages: list[dict[str, Any]], one: bool = False) -> None:
    from amqp.exceptions import AMQPError, MessageNacked

    from worker.app import INGEST_ONE_TASK, INGEST_TASK
    from worker.brokers.spool import spooled

    app = _app()
    settings: Settings = app.lethe_settings
    task_id = str(uuid.uuid4())
    try:
        with spooled(settings, task_id, messages):
            app.send_task(
                INGEST_ONE_TASK if one else INGEST_TASK,
                args=[messages],
                task_id=task_id,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
    except MessageNacked:
        # RabbitMQ said it could not keep the message (publisher confirms)
        raise BrokerUnavailable(
            f"the broker at {safe_url(settings.broker_url)} refused the event(s) and did not "
            "queue them: send them again (an event id sent twice is stored once)"
        ) from None
    # AMQPError: RabbitMQ refused the login (AccessRefused) or the vhost (NotAllowed);
    # py-amqp's errors are neither OSError nor KombuError, and escaped as tracebacks
    except (OSError, KombuError, AMQPError) as exc:
        if settings.embedded:
            # the embedded queue is a folder: nothing to start, a folder to fix
            raise BrokerUnavailable(
                f"cannot write the embedded queue under {settings.home} "
                f"({getattr(exc, 'strerror', None) or exc}): "
                "make LETHE_HOME writable"
            ) from None
        # kombu's error may carry no text of its own (a read that timed out): name its cause
        reason = str(exc) or type(exc.__cause__ or exc.__context__ or exc).__name__
        raise BrokerUnavailable(
            f"cannot reach the broker at {safe_url(settings.broker_url)} "
            f"({type(exc).__name__}: {reason}); start it or fix LETHE_BROKER_URL"
        ) from None


def is_suppressed(email: str) -> bool:
    """True when this address left the newsletter (or was erased) and must not get mail again.

    False again once the person subscribes anew after that (a subscription event sent
    with `match={"email": ...}`), and once a sweep has dropped the entry,
    LETHE_SUPPRESSION_DAYS after the sweep that erased the data holding the address.
    The suppression list holds keyed hashes only; the address is hashed here the
    same way, so it is never stored or sent.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from worker.store.migrate import SchemaNotReady
    from worker.store.schema import Suppression
    from worker.store.sessions import reading
    from worker.store.suppression import in_force

    settings = current_settings()
    try:
        _schema_ready(settings.database_url)
        with reading(settings.database_url) as session:
            # an entry written before the per-purpose keys has the legacy hash
            return any(
                entry is not None and in_force(entry.opposed_at, entry.subscribed_at)
                for entry in (
                    session.get(Suppression, h) for h in value_hashes(settings.secret, email)
                )
            )
    except SchemaNotReady as exc:
        # the shop's code catches one exception for "cannot tell": this is one
        raise StoreUnavailable(
            f"cannot read the suppression list in {safe_url(settings.database_url)}: {exc}; "
            "do not write to the address until it answers"
        ) from None
    except SQLAlchemyError as exc:
        # the type only: a driver's message may quote the statement's values
        raise StoreUnavailable(
            f"cannot read the suppression list in {safe_url(settings.database_url)} "
            f"({type(exc).__name__}): do not write to the address until it answers"
        ) from None


@lru_cache(maxsize=4)
def _schema_ready(url: str) -> None:
    from worker.store.migrate import ensure_schema

    ensure_schema(current_settings())
