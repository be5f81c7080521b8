"""The dashboard's web application (Starlette): read-only pages, /metrics, and /healthz.

Every page but /healthz needs the token (`Authorization: Bearer <token>` or
`?token=<token>`); a missing or wrong one gets a bare 401 that tells nothing
about the store. A store that cannot be read gets a page saying so, with the
remedy, and status 503, never a traceback.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, quote

import pendulum
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.brokers.consumers import Orphans
from worker.domain.durations import Duration
from worker.logs import log
from worker.ops.dashboard import chart, figures
from worker.ops.metrics import LetheCollector
from worker.ops.status import Check, Level, schema_check, store_checks, worst
from worker.settings import safe_url
from worker.shop.outbox import Backlog, OutboxUnavailable, backlog, has_outbox
from worker.store.sessions import now_utc, reading

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    # the token may be in the address: never send it on to another site
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
}
_PUBLIC = {"/healthz"}


@dataclass(frozen=True)
class DashboardConfig:
    database_url: str
    secret: bytes
    token: str
    timezone: str
    register_name: str
    known_types: frozenset[str] = frozenset()
    grace: Duration = figures.DEFAULT_GRACE
    flower_url: str | None = None
    clock: Callable[[], datetime] = now_utc
    # `lethe status`'s broker checks, so the verdict says what `lethe status` says
    broker: Callable[[], list[Check]] | None = None
    # on Redis, what workers whose heartbeat stopped hold (/metrics)
    orphans: Callable[[], Orphans | None] | None = None
    # the shop database, for its outbox's backlog (shown once `lethe outbox install` ran)
    shop_database_url: str | None = None


class TokenGate:
    """ASGI middleware: the bearer token or `?token=`, compared in constant time; logs requests.

    Only the path is logged, never the query string (it may hold the token).
    """

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] += [
                    (k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()
                ]
            await send(message)

        try:
            request = Request(scope)
            if scope["path"] in _PUBLIC or self._allowed(request):
                scope.setdefault("state", {})["token_query"] = self._token_query(request)
                await self.app(scope, receive, send_logged)
            else:
                response = PlainTextResponse(
                    "401 Unauthorized: this dashboard needs its token, as "
                    "`Authorization: Bearer <LETHE_DASHBOARD_TOKEN>` or `?token=`.\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="lethe"'},
                )
                await response(scope, receive, send_logged)
        finally:
            # compose probes /healthz every 30 s: only its failures are worth a line
            quiet = scope["path"] in _PUBLIC and status["code"] == 200
            (log.debug if quiet else log.info)(
                "dashboard request",
                method=scope.get("method"),
                path=scope["path"],
                status=status["code"],
                ms=round((time.perf_counter() - started) * 1000, 1),
            )

    def _allowed(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            return hmac.compare_digest(credentials.strip().encode(), self.token)
        given = request.query_params.get("token")
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    def _token_query(self, request: Request) -> str:
        # Links and the search form keep the token when the page was opened with
        # ?token=, so a browser without a header can navigate.
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), self.token):
            return "?token=" + quote(given, safe="")
        return ""


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("worker.ops.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["thousands"] = lambda n: f"{n:,}".replace(",", "\u202f")
    return env


def _outbox_backlog(url: str | None) -> Backlog | None:
    """The shop's outbox backlog, or None where there is no outbox (nor a reachable shop)."""
    if url is None or not has_outbox(url):
        return None
    try:
        return backlog(url)
    except OutboxUnavailable:
        return None


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard for one store; `lethe dashboard` serves it with uvicorn."""
    templates = _templates()
    metrics_registry = CollectorRegistry()
    metrics_registry.register(
        LetheCollector(
            config.database_url,
            config.grace,
            config.known_types,
            config.clock,
            config.orphans,
            shop_database_url=config.shop_database_url,
        )
    )

    def local(moment: datetime | None) -> str:
        if moment is None:
            return "-"
        return pendulum.instance(moment).in_timezone(config.timezone).format("YYYY-MM-DD HH:mm")

    def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        html = templates.get_template(name).render(
            register_name=config.register_name,
            timezone=config.timezone,
            token_query=request.scope.get("state", {}).get("token_query", ""),
            flower_url=config.flower_url,
            local=local,
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def unavailable(request: Request, exc: SQLAlchemyError) -> HTMLResponse:
        text = str(getattr(exc, "orig", exc))
        missing = "does not exist" in text or "no such table" in text
        if missing:
            what = "Lethe's store has no tables yet"
            remedy = "Run `lethe db upgrade` (the compose stack's `migrate` service does it)."
        else:
            what = "Lethe's store cannot be reached"
            remedy = "Start the database, or fix LETHE_DATABASE_URL; then reload this page."
        log.error("dashboard: store unavailable", error=type(exc).__name__)
        return page(
            request,
            "unavailable.html",
            status_code=503,
            what=what,
            remedy=remedy,
            where=safe_url(config.database_url),
            error=type(exc).__name__,
            now=config.clock(),
        )

    def overview(request: Request) -> Response:
        now = config.clock()
        try:
            with reading(config.database_url) as session:
                data = figures.overview(session, now, config.timezone, config.secret, config.grace)
                checks = store_checks(session, now, config.grace)
            # the verdict of `lethe status`: a store the code cannot use is not "all well"
            checks = [schema_check(config.database_url), *checks]
        except SQLAlchemyError as exc:
            return unavailable(request, exc)
        if config.broker is not None:
            checks = [*config.broker(), *checks]
        palette = chart.colours([row.activity for row in data.activities])
        return page(
            request,
            "overview.html",
            outbox=_outbox_backlog(config.shop_database_url),
            data=data,
            checks=checks,
            verdict=worst(checks),
            Level=Level,
            chart_svg=Markup(chart.deadlines_svg(data.chart, palette)),
            legend=chart.legend(data.chart, palette),
            now=now,
        )

    async def audit(request: Request) -> Response:
        result = None
        problem = None
        if request.method == "POST":
            body = (await request.body()).decode("utf-8", "replace")
            subject = (parse_qs(body).get("subject") or [""])[0].strip()
            if not figures.is_subject(subject):
                problem = "Give a subject as KIND:ID, for example customer:42."
            else:
                try:
                    with reading(config.database_url) as session:
                        result = figures.search_audit(
                            session, subject, config.secret, config.clock()
                        )
                except SQLAlchemyError as exc:
                    return unavailable(request, exc)
            # The subject goes no further than the hash: not logged, not shown back.
            del body, subject
        return page(request, "audit.html", result=result, problem=problem, now=config.clock())

    def metrics(_request: Request) -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    def healthz(_request: Request) -> Response:
        try:
            with reading(config.database_url) as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return PlainTextResponse(f"store unreachable ({type(exc).__name__})\n", 503)
        return PlainTextResponse("ok\n")

    app = Starlette(
        routes=[
            Route("/", overview),
            Route("/audit", audit, methods=["GET", "POST"]),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
        ]
    )
    app.add_middleware(TokenGate, token=config.token)
    return app
