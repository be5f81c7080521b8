"""The `lethe` command line: thin wrappers around the register, the pure core and the store."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import click
import pendulum

from worker.events import Event, EventRefused, parse_event, parse_instant
from worker.register import Register, RegisterError, load_register
from worker.retention import lifecycles
from worker.settings import register_path_from_env


def _register_or_exit(path: str | Path) -> Register:
    try:
        return load_register(path)
    except RegisterError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None


def _default_register() -> str:
    return str(register_path_from_env())


def _now_option(value: str | None) -> pendulum.DateTime:
    if value is None:
        return pendulum.now("UTC")
    try:
        return parse_instant(value, "--now")
    except EventRefused as exc:
        raise click.BadParameter(str(exc), param_hint="--now") from None


@click.group()
@click.version_option(package_name="lethe")
def main() -> None:
    """Lethe: the processing register enforces its own retention periods."""


@main.group()
def register() -> None:
    """Check and render the processing register."""


@register.command("check")
@click.argument("path", required=False)
def register_check(path: str | None) -> None:
    """Validate a register file: exit 0, or 1 with one `file:line: message` per problem."""
    path = path or _default_register()
    reg = _register_or_exit(path)
    click.echo(
        f"{path}: ok — {len(reg.activities)} activities, {len(reg.events)} event types",
        err=True,
    )


@register.command("show")
@click.argument("path", required=False)
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "html"]), default="md")
def register_show(path: str | None, fmt: str) -> None:
    """Render the art. 30 register (controller and processor activities apart)."""
    from worker.art30 import render

    click.echo(render(_register_or_exit(path or _default_register()), fmt), nl=False)


def read_event_lines(path: str, reg: Register) -> tuple[list[Event], list[tuple[int, str]]]:
    """Events of a JSON Lines file, and the refused ones as (line number, reason)."""
    accepted: list[Event] = []
    refused: list[tuple[int, str]] = []
    with click.open_file(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                accepted.append(parse_event(line, reg))
            except EventRefused as exc:
                refused.append((number, str(exc)))
    return accepted, refused


@main.command()
@click.argument("events_file", metavar="EVENTS.jsonl")
@click.option("--register", "register_path", help="Register file (default: LETHE_REGISTER).")
@click.option("--now", "now_text", help="Evaluate states at this instant (ISO 8601 with offset).")
def simulate(events_file: str, register_path: str | None, now_text: str | None) -> None:
    """Compute lifecycles from events, with no queue and no database."""
    reg = _register_or_exit(register_path or _default_register())
    now = _now_option(now_text)
    accepted, refused = read_event_lines(events_file, reg)
    for number, reason in refused:
        click.echo(f"{events_file}:{number}: refused: {reason}", err=True)
    by_subject: dict[str, list[Event]] = defaultdict(list)
    for event in accepted:
        by_subject[event.subject].append(event)
    rows = [
        lc.as_row(now)
        for subject in sorted(by_subject)
        for lc in lifecycles(subject, by_subject[subject], reg)
    ]
    json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    if refused:
        total = len(refused) + len(accepted)
        click.echo(f"{len(refused)} event(s) refused out of {total}", err=True)
        raise SystemExit(3)


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c), *(len(str(r.get(c) or "-")) for r in rows)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c) or "-").ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _print_rows(rows: list[dict], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        click.echo(_table(rows, columns))


def _settings():
    from worker.settings import SettingsError, current_settings

    try:
        return current_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _store_url() -> str:
    """The store's URL, migrated when embedded (so every command works on a fresh machine)."""
    from worker.migrate import SchemaNotReady, ensure_schema

    settings = _settings()
    try:
        ensure_schema(settings)
    except SchemaNotReady as exc:
        raise click.ClickException(str(exc)) from None
    return settings.database_url


@main.command()
@click.argument("event_type", metavar="TYPE", required=False)
@click.option("--subject", help="KIND:ID, e.g. customer:42")
@click.option("--at", "at", help="occurred_at, ISO 8601 with offset (default: now)")
@click.option("--id", "event_id", help="event id (default: a new UUID)")
@click.option("--data", "data", multiple=True, metavar="K=V", help="event data, repeatable")
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="send every event of a JSON Lines file",
)
def emit(event_type, subject, at, event_id, data, file) -> None:
    """Send events to the queue: one from options, or a JSON Lines file with --file."""
    from worker.client import BrokerUnavailable, EventInvalid, emit_many
    from worker.client import emit as emit_one

    if file and event_type:
        raise click.UsageError("give either TYPE --subject ... or --file, not both")
    if not file and not (event_type and subject):
        raise click.UsageError("give TYPE and --subject (or --file EVENTS.jsonl)")
    try:
        if file:
            _emit_file(file, emit_many)
            return
        pairs = dict(_key_value(item) for item in data)
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


def _emit_file(path: str, emit_many) -> None:
    numbered: list[tuple[int, str]] = []
    with click.open_file(path, encoding="utf-8") as handle:
        numbered = [(n, line) for n, line in enumerate(handle, start=1) if line.strip()]
    with click.progressbar(
        length=len(numbered), label="sending", file=sys.stderr, show_pos=True
    ) as bar:
        report = emit_many((line for _, line in numbered), progress=bar.update)
    for position, reason in report.refused:
        click.echo(f"{path}:{numbered[position - 1][0]}: refused: {reason}", err=True)
    click.echo(f"sent {report.sent}, refused {len(report.refused)}", err=True)
    if report.refused:
        raise SystemExit(3)


@main.command("worker")
@click.option("--concurrency", "-c", type=int, help="worker processes (embedded: 1)")
@click.option("--loglevel", default="INFO")
def worker_command(concurrency: int | None, loglevel: str) -> None:
    """Run a worker (and beat, when a schedule is set) on the configured broker."""
    from worker.app import app, events_queue
    from worker.spool import pending

    settings = _settings()
    _store_url()
    argv = ["worker", f"--loglevel={loglevel}", "-Q", events_queue(settings)]
    if settings.embedded:
        # One process: SQLite has one writer at a time anyway, and the filesystem
        # transport has no broadcast for mingle, gossip or heartbeats.
        argv += ["--pool=solo", "--without-mingle", "--without-gossip", "--without-heartbeat"]
        for task_id, messages in pending(settings):
            app.send_task("lethe.ingest", args=[messages], task_id=task_id)
    elif concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)


@main.command()
@click.option("--subject", help="only this subject (KIND:ID)")
@click.option("--due-before", "due_before", help="only deadlines before this instant (ISO)")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table")
@click.option("--now", "now_text", help="evaluate states at this instant (ISO 8601 with offset)")
def deadlines(subject: str | None, due_before: str | None, fmt: str, now_text: str | None) -> None:
    """Stored lifecycles, with the same fields as `lethe simulate`."""
    from worker.queries import deadline_rows

    limit = _now_option(due_before) if due_before else None
    rows = deadline_rows(_store_url(), _runtime_register(), _now_option(now_text), subject, limit)
    _print_rows(rows, fmt, ["subject", "activity", "anchor_at", "deadline_at", "state", "then"])


def _runtime_register() -> Register:
    return _register_or_exit(_settings().register_path)


@main.command("dead-letters")
@click.option("--replay", is_flag=True, help="ingest them again with the current register")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="table")
def dead_letters(replay: bool, fmt: str) -> None:
    """Events that could not be used, with the reason (payloads are not printed)."""
    from worker.queries import dead_letter_rows, replay_dead_letters

    url = _store_url()
    if replay:
        replayed, still = replay_dead_letters(url, _runtime_register())
        click.echo(f"replayed {replayed}, still refused {still}", err=True)
        return
    _print_rows(dead_letter_rows(url), fmt, ["id", "received_at", "event_id", "reason"])


@main.group()
def db() -> None:
    """Lethe's own store."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to LETHE_DATABASE_URL."""
    from worker.migrate import upgrade

    upgrade(_settings().database_url)
    click.echo("store schema is up to date", err=True)


@main.command()
@click.option("--dry-run", is_flag=True, help="print what would move, change nothing")
def recompute(dry_run: bool) -> None:
    """Recompute stored deadlines after the register changed; prints the diff first."""
    from worker.queries import recompute_lifecycles

    diff = recompute_lifecycles(_store_url(), _runtime_register(), apply=not dry_run)
    rows = [{"activity": a, **counts} for a, counts in sorted(diff.items())]
    click.echo(_table(rows, ["activity", "earlier", "later", "unchanged", "new", "dropped"]))
    click.echo("dry run: nothing changed" if dry_run else "applied", err=True)
