"""Commands for ops: the retention dashboard, a one-screen health check, and the
k-anonymity of what the sweeps left in the shop."""

from __future__ import annotations

import os

import click

from worker.cli.common import register_or_exit, settings_or_exit, shop_errors
from worker.cli.group import main


def _grace(value: str | None):
    from worker.domain.durations import DurationError, parse_duration
    from worker.ops.dashboard.figures import DEFAULT_GRACE

    text = value or os.environ.get("LETHE_OVERDUE_GRACE")
    if not text:
        return DEFAULT_GRACE
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise click.BadParameter(f"{exc}", param_hint="--grace / LETHE_OVERDUE_GRACE") from None


_GRACE_HELP = (
    "how long a lifecycle may stay due before it counts as overdue "
    "(e.g. '2 days'; default LETHE_OVERDUE_GRACE, else 2 days)"
)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8000, show_default=True, type=int, help="port to listen on")
@click.option("--grace", "grace_text", help=_GRACE_HELP)
def dashboard(host: str, port: int, grace_text: str | None) -> None:
    """Serve the retention dashboard (read-only; needs LETHE_DASHBOARD_TOKEN), with /metrics."""
    import uvicorn

    from worker.logs import configure_logging, log
    from worker.ops.dashboard.web import DashboardConfig, create_app
    from worker.ops.status import broker_checks, broker_orphans

    settings = settings_or_exit()
    if not settings.dashboard_token:
        raise click.ClickException(
            "LETHE_DASHBOARD_TOKEN is not set: the dashboard refuses to start without one "
            "(e.g. `export LETHE_DASHBOARD_TOKEN=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')`)"
        )
    if len(settings.dashboard_token) < 16:
        raise click.ClickException(
            "LETHE_DASHBOARD_TOKEN is shorter than 16 characters: use a random value"
        )
    register = register_or_exit(settings.register_path)
    configure_logging(settings.secret)
    config = DashboardConfig(
        database_url=settings.database_url,
        secret=settings.secret,
        token=settings.dashboard_token,
        timezone=register.timezone,
        register_name=register.name,
        known_types=frozenset(register.events),
        grace=_grace(grace_text),
        flower_url=os.environ.get("LETHE_FLOWER_URL") or None,
        broker=lambda: broker_checks(settings, timeout=2.0),
        orphans=lambda: broker_orphans(settings, timeout=2.0),
        shop_database_url=settings.shop_database_url,
    )
    log.info("dashboard listening", host=host, port=port)
    # log_config=None: uvicorn's records go through Lethe's processors; its access
    # log is off because it would write query strings, where the token may be.
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


@main.command()
@click.option("--grace", "grace_text", help=_GRACE_HELP)
def status(grace_text: str | None) -> None:
    """One screen of health; exit 0 OK, 1 when a human must look, 2 when a service is down."""
    from worker.ops.status import render, run_checks, worst
    from worker.store.sessions import now_utc

    settings = settings_or_exit()
    now = now_utc()
    checks = run_checks(settings, now, _grace(grace_text))
    click.echo(render(checks, now))
    raise SystemExit(int(worst(checks)))


@main.command()
@click.option(
    "--k", "k", default=5, show_default=True, type=click.IntRange(min=2), help="the k to reach"
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def anonymity(k: int, fmt: str) -> None:
    """Per anonymise target, the smallest group of erased rows sharing every
    quasi-identifier the strategies kept (k_min), and how many rows are in groups below k."""
    from worker.cli.common import print_rows
    from worker.ops.anonymity import anonymity as measure
    from worker.ops.anonymity import as_rows

    settings = settings_or_exit()
    register = register_or_exit(settings.register_path)
    with shop_errors():
        found = measure(settings, register, k)
    rows = as_rows(found)
    if fmt == "json":
        print_rows(rows, fmt, [])
        return
    shown = [{**r, "quasi_identifiers": ",".join(r["quasi_identifiers"])} for r in rows]
    columns = ["table", "activity", "rows", "k_min", "below_k", "quasi_identifiers"]
    print_rows(shown, fmt, columns)
    for r in rows:
        if r["remedy"]:
            click.echo(f"{r['target']} ({r['activity']}): {r['remedy']}")
