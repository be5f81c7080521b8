"""`lethe intake`: the HTTP intake for shops that cannot write an outbox."""

from __future__ import annotations

import click

from worker.cli.common import register_or_exit, settings_or_exit
from worker.cli.group import main

_TOKEN_REMEDY = (
    "(e.g. `export LETHE_INTAKE_TOKEN=$(python -c 'import secrets; "
    "print(secrets.token_urlsafe(32))')`, and give the shop the same value)"
)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8001, show_default=True, type=int, help="port to listen on")
def intake(host: str, port: int) -> None:
    """Serve POST /v1/events (needs LETHE_INTAKE_TOKEN), GET /v1/health and /openapi.json."""
    import uvicorn

    from worker.logs import configure_logging, log
    from worker.ops.intake import IntakeConfig, create_app
    from worker.ops.status import Level, broker_check

    settings = settings_or_exit()
    token = settings.intake_token
    if not token:
        raise click.ClickException(
            "LETHE_INTAKE_TOKEN is not set: the intake refuses to start without one "
            + _TOKEN_REMEDY
        )
    if len(token) < 16:
        raise click.ClickException(
            "LETHE_INTAKE_TOKEN is shorter than 16 characters: use a random value " + _TOKEN_REMEDY
        )
    register_or_exit(settings.register_path)  # a broken register: say so now, not per request
    configure_logging(settings.secret)

    def broker() -> tuple[bool, str]:
        check = broker_check(settings, timeout=2.0)
        return check.level == Level.ok, check.detail

    log.info("intake listening", host=host, port=port)
    # log_config=None: uvicorn's records go through Lethe's processors; no access log
    # (addresses and paths of every shop's calls are no one's business in the log).
    uvicorn.run(
        create_app(IntakeConfig(token=token, broker=broker)),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
