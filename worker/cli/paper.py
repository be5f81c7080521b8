"""Commands on paper: the register and `simulate`, with no queue and no database."""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import click

from worker.cli.common import default_register, now_option, register_or_exit, text_lines
from worker.cli.group import main
from worker.domain.events import Event, EventRefused, parse_event
from worker.domain.register import Register
from worker.domain.register_file import register_warnings
from worker.domain.retention import lifecycles


@main.group()
def register() -> None:
    """Check and render the processing register."""


@register.command("check")
@click.argument("path", required=False)
def register_check(path: str | None) -> None:
    """Validate a register file: exit 0, or 1 with one `file:line: message` per problem.

    Warnings (`file:line: warning: message`, after the ok line) do not change the exit
    status: anonymised rows that rows kept by law still link to their person."""
    path = path or default_register()
    reg = register_or_exit(path)
    click.echo(
        f"{path}: ok — {len(reg.activities)} activities, {len(reg.events)} event types",
        err=True,
    )
    for warning in register_warnings(reg, path):
        click.echo(f"{warning.path}:{warning.line}: warning: {warning.message}", err=True)


@register.command("show", short_help="Render the art. 30 register.")
@click.argument("path", required=False)
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "html"]), default="md")
def register_show(path: str | None, fmt: str) -> None:
    """Render the art. 30 register (controller and processor activities apart)."""
    from worker.domain.art30 import render

    click.echo(render(register_or_exit(path or default_register()), fmt), nl=False)


def read_event_lines(path: str, reg: Register) -> tuple[list[Event], list[tuple[int, str]]]:
    """Events of a JSON Lines file, and the refused ones as (line number, reason)."""
    accepted: list[Event] = []
    refused: list[tuple[int, str]] = []
    for number, line in text_lines(path, "'EVENTS.jsonl'"):
        if not line.strip():
            continue
        try:
            accepted.append(parse_event(line, reg))
        except EventRefused as exc:
            refused.append((number, str(exc)))
    return accepted, refused


@main.command()
@click.argument(
    "events_file",
    metavar="EVENTS.jsonl",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@click.option("--register", "register_path", help="Register file (default: LETHE_REGISTER).")
@click.option("--now", "now_text", help="Evaluate states at this instant (ISO 8601 with offset).")
def simulate(events_file: str, register_path: str | None, now_text: str | None) -> None:
    """Compute lifecycles from events, with no queue and no database."""
    reg = register_or_exit(register_path or default_register())
    now = now_option(now_text)
    accepted, refused = read_event_lines(events_file, reg)
    for number, reason in refused:
        click.echo(f"{events_file}:{number}: refused: {reason}", err=True)
    by_subject: dict[str, list[Event]] = defaultdict(list)
    seen: set[str] = set()
    for event in accepted:
        # the store keeps the first event of an id, whatever its subject: so does simulate
        if event.id not in seen:
            seen.add(event.id)
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
