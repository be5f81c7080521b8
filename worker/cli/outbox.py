"""`lethe outbox`: install the shop's outbox table, relay it, and say what waits in it."""

from __future__ import annotations

import time

import click

from worker.cli.common import note, settings_or_exit, store_url
from worker.cli.group import main


@main.group()
def outbox() -> None:
    """The transactional outbox in the shop database (lethe_outbox)."""


@outbox.command("install")
@click.option("--print", "print_only", is_flag=True, help="print the DDL, create nothing")
def outbox_install(print_only: bool) -> None:
    """Create lethe_outbox in LETHE_SHOP_DATABASE_URL (or print its DDL for a DBA)."""
    from worker.settings import safe_url
    from worker.shop.outbox import OutboxUnavailable, ddl, install

    url = settings_or_exit().shop_database_url
    try:
        if print_only:
            click.echo("\n".join(f"{statement};" for statement in ddl(url)))
            return
        created = install(url)
    except OutboxUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    where = safe_url(url)
    note(f"lethe_outbox created in {where}" if created else f"lethe_outbox exists in {where}")


@outbox.command("relay")
@click.option("--once", is_flag=True, help="relay what waits now, then exit")
def outbox_relay(once: bool) -> None:
    """Publish the outbox's rows to the queue (every LETHE_OUTBOX_EVERY seconds)."""
    from sqlalchemy.exc import SQLAlchemyError

    from worker.client import BrokerUnavailable, EventInvalid
    from worker.logs import configure_logging, log
    from worker.pipeline.outbox import relay
    from worker.shop.outbox import OutboxUnavailable, backlog

    settings = settings_or_exit()
    store_url()  # refused rows become dead letters in the store
    try:
        backlog(settings.shop_database_url)  # no table: say so now, with the remedy
    except OutboxUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if once:
        try:
            report = relay(settings)
        except (BrokerUnavailable, EventInvalid) as exc:
            raise click.ClickException(f"{exc}; the rows stay in the outbox") from None
        note(f"relayed {report.sent}, refused {report.refused} (now dead letters)")
        raise SystemExit(3 if report.refused else 0)
    configure_logging(settings.secret)
    log.info("outbox relay started", every=settings.outbox_every)
    while True:
        try:
            report = relay(settings)
        except BrokerUnavailable:
            log.warning("outbox relay: broker unavailable, rows kept for the next run")
        except EventInvalid as exc:
            log.error("outbox relay: the register cannot be used", error=type(exc).__name__)
        except SQLAlchemyError as exc:
            log.warning("outbox relay: database unavailable", error=type(exc).__name__)
        else:
            if report.batches:
                log.info("outbox relayed", sent=report.sent, refused=report.refused)
        time.sleep(settings.outbox_every)


@outbox.command("status")
def outbox_status() -> None:
    """Rows waiting in the outbox, and how long the oldest has waited."""
    from worker.shop.outbox import OutboxUnavailable, backlog

    try:
        waiting = backlog(settings_or_exit().shop_database_url)
    except OutboxUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"pending: {waiting.pending}")
    oldest = "-" if waiting.oldest_seconds is None else f"{waiting.oldest_seconds:.1f} s"
    click.echo(f"oldest: {oldest}")
