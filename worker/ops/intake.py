"""The HTTP intake (`lethe intake`): events in by `POST /v1/events`, for shops that cannot
write an outbox (hosted shops, webhooks), sent on through `emit_many`'s path.

202 only once the broker holds the accepted events; 503 with nothing accepted when it
cannot (the event ids make the retry safe). Reasons name fields and positions, never
the values sent; the log gets counts only.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.client import BrokerUnavailable, EventInvalid, emit_many
from worker.logs import log

MAX_EVENTS = 5_000
MAX_BYTES = 5 * 1024 * 1024
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class IntakeConfig:
    token: str
    # whether the broker answers, for /v1/health: (up, what to say)
    broker: Callable[[], tuple[bool, str]]


class BodyRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(config: IntakeConfig) -> Starlette:
    """The intake's web application; `lethe intake` serves it with uvicorn."""
    token = config.token.encode()

    def authorised(request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        given = credentials.strip().encode() if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(given, token)  # constant time, whatever was given

    async def events(request: Request) -> Response:
        started = time.perf_counter()
        if not authorised(request):
            log.info("intake refused a request without its token")
            return _problem(
                401,
                "this intake needs its token: Authorization: Bearer <LETHE_INTAKE_TOKEN>",
                headers={"WWW-Authenticate": 'Bearer realm="lethe-intake"'},
            )
        try:
            body = await _body(request)
            items = _parsed(body, request.headers.get("content-type", ""))
        except BodyRefused as exc:
            return _problem(exc.status, str(exc))
        try:
            report = await run_in_threadpool(_send, items)
        except BrokerUnavailable as exc:
            log.warning("intake: broker unavailable, nothing accepted", events=len(items))
            return _problem(503, f"{exc}; nothing was accepted: send the same events again")
        except EventInvalid as exc:  # the register cannot be loaded: no event can be checked
            log.error("intake: the register cannot be used")
            return _problem(503, f"{exc}; nothing was accepted")
        refused = [{"index": index, "reason": reason} for index, reason in report.refused]
        log.info(
            "intake accepted events",
            accepted=report.sent,
            refused=len(refused),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return JSONResponse({"accepted": report.sent, "refused": refused}, status_code=202)

    async def health(_request: Request) -> Response:
        up, detail = await run_in_threadpool(config.broker)
        return JSONResponse(
            {"status": "ok" if up else "down", "broker": detail}, status_code=200 if up else 503
        )

    async def openapi(_request: Request) -> Response:
        return JSONResponse(OPENAPI)

    return Starlette(
        routes=[
            Route("/v1/events", events, methods=["POST"]),
            Route("/v1/health", health),
            Route("/openapi.json", openapi),
        ]
    )


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BYTES:
        raise BodyRefused(413, _too_large())
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:  # counted as it comes: a false Content-Length changes nothing
            raise BodyRefused(413, _too_large())
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> str:
    return (
        f"the body is larger than {MAX_BYTES // (1024 * 1024)} MB: send at most "
        f"{MAX_EVENTS:,} events per request"
    )


def _parsed(body: bytes, content_type: str) -> list[Any]:
    """The events of a JSON array, or of JSON Lines; BodyRefused (400, 413) otherwise."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BodyRefused(400, "the body is not UTF-8 text") from None
    if content_type.split(";")[0].strip().lower() == NDJSON:
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise BodyRefused(
                    400, f"line {number} is not JSON ({exc.msg}): one JSON event per line"
                ) from None
    else:
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise BodyRefused(
                400,
                f"the body is not JSON ({exc.msg} at character {exc.pos}): send a JSON array "
                f"of events, or JSON Lines with Content-Type: {NDJSON}",
            ) from None
        if not isinstance(items, list):
            raise BodyRefused(
                400, f"the body must be a JSON array of events (or JSON Lines as {NDJSON})"
            )
    if len(items) > MAX_EVENTS:
        raise BodyRefused(413, f"{len(items):,} events: send at most {MAX_EVENTS:,} per request")
    return items


def _send(items: list[Any]) -> Any:
    """emit_many over the body's events, in one broker message: all of them sent, or none.

    Objects with an id go as emit_many's dicts (so `match` values are hashed here); anything
    else as its JSON text, which the event format's own check refuses at its position (an
    object without an id: "missing field: id"; the intake needs ids, so a retry is harmless).
    """
    events = [
        item if isinstance(item, dict) and item.get("id") not in (None, "") else json.dumps(item)
        for item in items
    ]
    return emit_many(events, batch_size=max(1, len(events)))


def _problem(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


_EVENT = {
    "type": "object",
    "required": ["id", "type", "subject", "occurred_at"],
    "properties": {
        "id": {"type": "string", "maxLength": 200, "description": "makes a retry harmless"},
        "type": {"type": "string", "example": "order.closed"},
        "subject": {"type": "string", "example": "customer:42"},
        "occurred_at": {"type": "string", "example": "2026-03-01T10:00:00+01:00"},
        "data": {"type": "object"},
        "match": {
            "type": "object",
            "description": "values to match later (e.g. email); stored as keyed hashes only",
            "additionalProperties": {"type": "string"},
        },
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Lethe intake", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Event": _EVENT},
    },
    "paths": {
        "/v1/events": {
            "post": {
                "summary": "Send events (a JSON array, or JSON Lines)",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "maxItems": MAX_EVENTS,
                                "items": {"$ref": "#/components/schemas/Event"},
                            }
                        },
                        NDJSON: {"schema": {"$ref": "#/components/schemas/Event"}},
                    },
                },
                "responses": {
                    "202": {
                        "description": "the broker holds the accepted events",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "accepted": {"type": "integer"},
                                        "refused": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "properties": {
                                                    "index": {
                                                        "type": "integer",
                                                        "description": "1-based position",
                                                    },
                                                    "reason": {"type": "string"},
                                                },
                                            },
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "400": {"description": "the body is not JSON"},
                    "401": {"description": "no token, or a wrong one"},
                    "413": {"description": f"more than {MAX_EVENTS} events or 5 MB"},
                    "503": {"description": "the broker is down: nothing accepted, send again"},
                },
            }
        },
        "/v1/health": {
            "get": {
                "summary": "Whether the intake can reach its broker",
                "responses": {"200": {"description": "up"}, "503": {"description": "down"}},
            }
        },
    },
}
