"""Commands of the event pipeline: emit, worker, deadlines, dead letters, store upkeep."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from worker.cli.common import (
    configured_register,
    now_option,
    print_rows,
    settings_or_exit,
    store_url,
    table,
    text_lines,
)
from worker.cli.group import main

if TYPE_CHECKING:
    from worker.client import EmitReport


@main.command()
@click.argument("event_type", metavar="TYPE", required=False)
@click.option("--subject", help="KIND:ID, e.g. customer:42")
@click.option("--at", "at", help="occurred_at, ISO 8601 with offset (default: now)")
@click.option("--id", "event_id", help="event id (default: a new UUID)")
@click.option("--data", "data", multiple=True, metavar="K=V", help="event data, repeatable")
@click.option(
    "--direction",
    type=click.Choice(["inbound", "outbound"]),
    help="contact.made: inbound (the person wrote, called, clicked through) or outbound "
    "(the shop wrote or called); the same as --data direction=...",
)
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="send every event of a JSON Lines file",
)
def emit(
    event_type: str | None,
    subject: str | None,
    at: str | None,
    event_id: str | None,
    data: tuple[str, ...],
    direction: str | None,
    file: str | None,
) -> None:
    """Send events to the queue: one from options, or a JSON Lines file with --file."""
    from worker.client import BrokerUnavailable, EventInvalid, emit_many
    from worker.client import emit as emit_one

    if file and (event_type or direction):
        raise click.UsageError("give either TYPE --subject ... or --file, not both")
    if not file and not (event_type and subject):
        raise click.UsageError("give TYPE and --subject (or --file EVENTS.jsonl)")
    settings_or_exit()
    try:
        if file:
            _emit_file(file, emit_many)
            return
        pairs = dict(_key_value(item) for item in data)
        if direction is not None:
            if pairs.get("direction", direction) != direction:
                raise click.UsageError("--direction and --data direction=... disagree: give one")
            pairs["direction"] = direction
        sent_id = emit_one(event_type, subject=subject, occurred_at=at, id=event_id, data=pairs)
        click.echo(f"sent {event_type} {sent_id}", err=True)
    except EventInvalid as exc:
        raise click.ClickException(f"event refused: {exc}") from None
    except BrokerUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def _key_value(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{item!r} is not K=V", param_hint="--data")
    if value in ("true", "false"):
        return key, value == "true"
    return key, value


def _emit_file(path: str, emit_many: Callable[..., EmitReport]) -> None:
    from worker.client import BrokerUnavailable

    numbered = [(n, line) for n, line in text_lines(path, "'--file'") if line.strip()]
    try:
        with click.progressbar(
            length=len(numbered), label="sending", file=sys.stderr, show_pos=True
        ) as bar:
            report = emit_many((line for _, line in numbered), progress=bar.update)
    except BrokerUnavailable as exc:
        _print_refused(path, numbered, exc.refused)
        # emit_many counts the file's non-blank lines; the user edits the file by line
        line = numbered[exc.resume_at - 1][0] if exc.resume_at else 1
        raise click.ClickException(
            f"{exc}\n{path}: {exc.sent} event(s) sent; send the file again from line {line}"
        ) from None
    _print_refused(path, numbered, report.refused)
    click.echo(f"sent {report.sent}, refused {len(report.refused)}", err=True)
    if report.refused:
        raise SystemExit(3)


def _print_refused(
    path: str, numbered: list[tuple[int, str]], refused: list[tuple[int, str]]
) -> None:
    for position, reason in refused:
        click.echo(f"{path}:{numbered[position - 1][0]}: refused: {reason}", err=True)


@main.command("worker")
@click.option("--concurrency", "-c", type=int, help="worker processes (embedded: 1)")
@click.option("--loglevel", default="INFO")
def worker_command(concurrency: int | None, loglevel: str) -> None:
    """Run a worker on the configured broker (and beat with it, on the embedded default)."""
    from worker.app import app, events_queue, register_refusal

    settings = settings_or_exit()
    store_url()
    if problem := register_refusal(settings):
        click.echo(f"Error: {problem}", err=True)
        raise SystemExit(78)  # as `celery -A worker.app worker` (worker/app.py)
    argv = ["worker", f"--loglevel={loglevel}", "-Q", events_queue(settings)]
    if settings.embedded:
        from worker.pipeline.embedded_start import HomeInUse, hold_home, recover

        # One process: SQLite has one writer at a time anyway, and the filesystem
        # transport has no broadcast for mingle, gossip or heartbeats.
        argv += ["--pool=solo", "--without-mingle", "--without-gossip", "--without-heartbeat"]
        # Beat runs inside the embedded worker (schedules/beat.py: the nightly sweep);
        # a shared deployment runs one `celery -A worker.app beat` of its own.
        argv.append("--beat")
        try:
            hold_home(settings)
        except HomeInUse as exc:
            raise click.ClickException(str(exc)) from None
        recovered = recover(app, settings)
        if any(recovered.values()):
            click.echo(
                "recovered from the last worker: {resent} batch(es) sent again, {set_aside} "
                "set aside as dead letters, {resumed_sweeps} sweep(s) resumed".format(**recovered),
                err=True,
            )
    elif concurrency:
        argv.append(f"--concurrency={concurrency}")
    # app.worker_main drops Celery's exit code: a worker that stopped on an
    # unrecoverable error must not look like a clean stop to systemd or compose.
    if code := app.start(argv=argv):
        raise SystemExit(code)


@main.command()
@click.option("--subject", help="only this subject (KIND:ID)")
@click.option("--due-before", "due_before", help="only deadlines before this instant (ISO)")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table")
@click.option("--now", "now_text", help="evaluate states at this instant (ISO 8601 with offset)")
def deadlines(subject: str | None, due_before: str | None, fmt: str, now_text: str | None) -> None:
    """Stored lifecycles, with the same fields as `lethe simulate`."""
    from worker.pipeline.queries import deadline_rows

    limit = now_option(due_before, "--due-before") if due_before else None
    rows = deadline_rows(store_url(), configured_register(), now_option(now_text), subject, limit)
    print_rows(rows, fmt, ["subject", "activity", "anchor_at", "deadline_at", "state", "then"])


@main.command("dead-letters")
@click.option("--replay", is_flag=True, help="ingest them again with the current register")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table")
def dead_letters(replay: bool, fmt: str) -> None:
    """Events that could not be used, with the reason (payloads are not printed)."""
    from worker.pipeline.queries import dead_letter_rows, replay_dead_letters

    url = store_url()
    if replay:
        replayed, still = replay_dead_letters(url, configured_register())
        click.echo(f"replayed {replayed}, still refused {still}", err=True)
        return
    print_rows(dead_letter_rows(url), fmt, ["id", "received_at", "event_id", "reason"])


@main.group()
def db() -> None:
    """Lethe's own store."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to LETHE_DATABASE_URL."""
    from worker.store.migrate import upgrade

    before, after = upgrade(settings_or_exit().database_url)
    if before == after:
        click.echo(f"store schema is up to date ({after}): nothing to do", err=True)
    else:
        click.echo(f"store schema upgraded from {before or 'nothing'} to {after}", err=True)


@main.command()
@click.option("--dry-run", is_flag=True, help="print what would move, change nothing")
def recompute(dry_run: bool) -> None:
    """Recompute stored deadlines after the register changed; prints the diff first."""
    from worker.pipeline.queries import recompute_lifecycles

    diff = recompute_lifecycles(store_url(), configured_register(), apply=not dry_run)
    rows = [{"activity": a, **counts} for a, counts in sorted(diff.items())]
    click.echo(table(rows, ["activity", "earlier", "later", "unchanged", "new", "dropped"]))
    click.echo("dry run: nothing changed" if dry_run else "applied", err=True)
