"""Commands on the shop's past and present: backfill, shop coverage, and the art. 15 access
report (`lethe purge --reapply` is an option of purge, worker/cli/sweeps.py)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from worker.cli.common import (
    configured_register,
    note,
    now_option,
    print_rows,
    settings_or_exit,
    shop_errors,
    store_url,
)
from worker.cli.group import main
from worker.cli.sweeps import shop

_BACKFILL_COLUMNS = [
    "source",
    "event",
    "from",
    "rows",
    "events",
    "skipped",
    "refused",
    "earliest",
    "latest",
]


@main.command()
@click.option("--dry-run", is_flag=True, help="count what would be sent, send nothing")
@click.option("--source", "only", type=int, metavar="N", help="only the register's N-th source")
@click.option("--until", "until_text", help="only rows whose instant is at or before this (ISO)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def backfill(dry_run: bool, only: int | None, until_text: str | None, fmt: str) -> None:
    """Send the events the shop's existing rows tell (the register's `sources:`).

    Rows are read in key order, in batches, and their events go through the same
    queue as live ones; a second backfill sends ids the store already holds, which
    change nothing. Rows whose instant is NULL or a zero date are skipped and counted.
    The next sweep waits for a DPO's approval (`lethe purge --approve RUN`).
    """
    from worker.client import BrokerUnavailable
    from worker.pipeline.backfill import backfill as run_backfill
    from worker.pipeline.backfill import chosen_sources
    from worker.shop.binding import ShopUnavailable, shop_engine
    from worker.shop.sources import count_source_rows

    settings = settings_or_exit()
    register = configured_register()
    until = now_option(until_text, "--until") if until_text else None
    # migrated when embedded: the backfill is recorded there, and the audit says who
    # was erased already (their rows are not sent again)
    store_url()
    with shop_errors():
        try:
            sources = chosen_sources(settings, register, only)
            engine = shop_engine(settings.shop_database_url)
            total = sum(count_source_rows(engine, b) for b in sources)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    label = "counting" if dry_run else "sending"
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        try:
            reports = run_backfill(
                settings, register, sources, until=until, dry_run=dry_run, progress=bar.update
            )
        except ShopUnavailable as exc:
            raise click.ClickException(str(exc)) from None
        except BrokerUnavailable as exc:
            raise click.ClickException(
                f"{exc}. Run `lethe backfill` again once the queue is back: the events "
                "already sent are stored once"
            ) from None
    rows = [r.as_dict() for r in reports]
    print_rows(rows, fmt, _BACKFILL_COLUMNS)
    for report in reports:
        for reason, n in sorted(report.reasons.items()):
            note(f"source {report.index}: {n} row(s) refused: {reason}")
        if report.later:
            note(f"source {report.index}: {report.later} row(s) after --until, not sent")
    if not dry_run and sum(r.events for r in reports):
        note(
            "the next sweep waits for a DPO's approval: check it with `lethe purge --dry-run`, "
            "then `lethe purge` and `lethe purge --approve RUN`"
        )


_COVERAGE_COLUMNS = ["activity", "table", "rows", "covered", "uncovered", "back"]


@shop.command("coverage")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def shop_coverage(fmt: str) -> None:
    """Per target, the shop rows no lifecycle covers (never erased) and the rows back after
    an erasure (a restore): counts and example primary keys, never a subject. Exit 0."""
    from worker.sweeps.coverage import measure_coverage

    settings = settings_or_exit()
    register = configured_register()
    store_url()
    with shop_errors():
        rows = measure_coverage(settings, register, store=True)
    shown = [r.as_dict() for r in rows]
    if fmt == "json":
        json.dump(shown, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
        return
    print_rows(shown, fmt, _COVERAGE_COLUMNS)
    for row in rows:
        if row.uncovered and row.examples:
            keys = ", ".join(str(k) for k in row.examples)
            note(f"{row.activity} / {row.table}: uncovered rows, e.g. primary keys {keys}")
    if any(r.back for r in rows):
        note("rows are back after an erasure: `lethe purge --reapply` erases them again")


@main.command()
@click.argument("subject")
@click.option("--format", "fmt", type=click.Choice(["json", "html"]), default="json")
@click.option(
    "--match",
    "matches",
    multiple=True,
    metavar="NAME=VALUE",
    help="a value the suppression list may name (email=...)",
)
def access(subject: str, fmt: str, matches: tuple[str, ...]) -> None:
    """What the shop and Lethe hold about SUBJECT (GDPR art. 15): purposes, legal bases,
    data categories, deadlines, holds, and the shop's rows, read live. Never logged."""
    from worker.cli.common import subject_or_exit
    from worker.ops.access import access_report, render_html

    settings = settings_or_exit()
    register = configured_register()
    subject_or_exit(subject, register)
    values: dict[str, str] = {}
    for item in matches:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter("give NAME=VALUE, such as email=...", param_hint="--match")
        values[name] = value
    store_url()
    with shop_errors():
        report: dict[str, Any] = access_report(settings, register, subject, values)
    if fmt == "html":
        click.echo(render_html(register, report))
    else:
        json.dump(report, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    if not report["activities"]:
        note("Lethe and the shop hold no data about this subject")
