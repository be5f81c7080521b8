"""Commands of the sweeps: purge, forecast, hold, audit, shop check, demo."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from typing import Any

import click
import psycopg
import sqlalchemy as sa

from worker.cli.common import (
    SHOP_MISMATCH,
    configured_register,
    empty_audit_note,
    note,
    now_option,
    print_rows,
    settings_or_exit,
    shop_errors,
    shop_mismatch,
    store_url,
    subject_or_exit,
    table,
)
from worker.cli.group import main

# `lethe purge` exits with this when the sweep stopped to wait for a DPO's approval.
AWAITING_APPROVAL = 4


@main.command()
@click.option(
    "--dry-run", is_flag=True, help="say what would change (rows per table), change nothing"
)
@click.option("--now", "now_text", help="erase what is due at this instant (ISO 8601 with offset)")
@click.option("--approve", "approve_run", type=int, metavar="RUN", help="let a stopped run go on")
@click.option(
    "--reapply", is_flag=True, help="erase again the rows found back after a restore, only that"
)
@click.option("--since", "since_text", help="with --reapply: subjects erased since (ISO)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def purge(
    dry_run: bool,
    now_text: str | None,
    approve_run: int | None,
    reapply: bool,
    since_text: str | None,
    fmt: str,
) -> None:
    """Run a sweep now: the same code beat runs at night.

    Exits 4 when the sweep stopped for approval (first sweep on a register, far
    more than usual): check with --dry-run, then `lethe purge --approve RUN`.
    With --reapply, erases again what was erased and is back in the shop (a
    restored backup): `lethe shop coverage` counts those rows.
    """
    if reapply or since_text:
        if not reapply or dry_run or now_text or approve_run is not None:
            raise click.UsageError(
                "--since goes with --reapply, and --reapply with no --dry-run, --now or "
                "--approve (`lethe shop coverage` shows what it would erase again)"
            )
        _reapply(since_text, fmt)
        return
    from worker.runtime import runtime
    from worker.shop.binding import ShopMismatch, ShopUnavailable
    from worker.sweeps.run import approve, fail_run, open_run, run_sweep
    from worker.sweeps.runs import SweepRefused

    if approve_run is not None and (dry_run or now_text):
        raise click.UsageError("--approve runs the stopped run as planned: no --dry-run or --now")
    url = store_url()
    register = configured_register()  # a broken register: its file:line, not a traceback
    rt = runtime()
    settings = rt.settings
    try:
        if approve_run is not None:
            approve(settings, register, approve_run)
            run_id = approve_run
        else:
            moment = now_option(now_text)
            _refuse_a_future_clock(moment, dry_run)
            run_id = open_run(
                settings, register, now=moment, status="dry_run" if dry_run else "running"
            )
    except SweepRefused as exc:
        raise click.ClickException(str(exc)) from None
    bar = _Bar()
    try:
        result = run_sweep(settings, register, run_id, progress=bar.update, on_plan=bar.start)
    except ShopMismatch as exc:
        fail_run(settings, run_id, SHOP_MISMATCH)
        raise shop_mismatch(exc) from None  # as every command ends (cli.common.shop_errors)
    except ShopUnavailable as exc:
        fail_run(settings, run_id, str(exc))
        if not dry_run:
            rt.log.error("ALERT sweep failed: shop database unreachable", run=run_id)
        raise click.ClickException(str(exc)) from None
    except STORE_FAILURES as exc:
        with contextlib.suppress(*STORE_FAILURES):  # the store may be down altogether
            fail_run(settings, run_id, f"the store failed ({type(exc).__name__})")
        # The type only: a database's message may quote the statement's rows.
        rt.log.error(
            "ALERT sweep failed: the store refused a write", run=run_id, error=type(exc).__name__
        )
        raise click.ClickException(
            f"Lethe's store failed during run {run_id} ({type(exc).__name__}); the open batch "
            "was rolled back, its lifecycles stay due, and what it had already changed in the "
            "shop is audited by the next sweep. Check the store (`lethe status`), then run "
            "`lethe purge` again"
        ) from None
    finally:
        bar.close()
    _report(url, settings.secret, result, fmt)
    if result.status == "awaiting_approval":
        raise SystemExit(AWAITING_APPROVAL)


def _reapply(since_text: str | None, fmt: str) -> None:
    from worker.sweeps.reapply import reapply

    store_url()
    settings = settings_or_exit()
    register = configured_register()
    since = now_option(since_text, "--since") if since_text else None
    with shop_errors():
        done = reapply(settings, register, since=since)
    summary = {
        "run": done.run_id,
        "status": "done" if done.run_id else "nothing_back",
        "back": done.back_before,
        "subjects": done.subjects,
        "rows": done.rows,
    }
    if fmt == "json":
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if done.run_id is None:
        note("no rows are back after an erasure: nothing to erase again")
    else:
        note(
            f"run {done.run_id}: {done.subjects} subject(s) erased again ({done.rows} rows), "
            "each audited as reapplied"
        )


# Any failure of the store's database, SQLAlchemy's or the driver's own (COPY runs on the
# driver's cursor); tasks/ingest.py's STORE_ERRORS are only the ones worth retrying.
STORE_FAILURES = (sa.exc.DBAPIError, psycopg.Error, sqlite3.Error)


def _refuse_a_future_clock(moment: Any, dry_run: bool) -> None:
    """A `--now` in the future would erase people before their deadline (a typo in a year
    is enough), so only a dry run may look ahead."""
    from worker.sweeps.runs import ahead_of_the_clock

    ahead = ahead_of_the_clock(moment)
    if not dry_run and ahead:
        raise click.UsageError(
            f"--now is {ahead.days} day(s) {ahead.seconds // 3600} hour(s) ahead of the real "
            "clock: a sweep then would erase lifecycles before their deadline. Look ahead "
            "with --dry-run or `lethe forecast --until ...`"
        )


class _Bar:
    """A progress bar that appears once the plan says how many lifecycles are due."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, plan: Any) -> None:
        if plan.due:
            self.bar = click.progressbar(
                length=plan.due, label="erasing", file=sys.stderr, show_pos=True
            )
            self.bar.__enter__()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _report(url: str, secret: bytes, result: Any, fmt: str) -> None:
    from worker.store.audit import audit_rows

    summary = {
        "run": result.run_id,
        "status": result.status,
        "due": result.due,
        "held": result.held,
        "erased": result.erased,
        "failed": result.failed,
        "rows": result.rows,
        "reasons": result.plan.get("reasons", result.reasons),
    }
    if result.status == "dry_run":
        summary["would_change"] = result.plan.get("rows", [])
    elif result.status in ("done", "failed"):
        summary["outcomes"] = _outcomes(audit_rows(url, secret, run_id=result.run_id))
    if fmt == "json":
        json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    elif result.status == "dry_run":
        click.echo(table(summary["would_change"], ["activity", "target", "rows", "kept_by_law"]))
    elif "outcomes" in summary:
        click.echo(
            table(summary["outcomes"], ["activity", "target", "outcome", "lifecycles", "rows"])
        )
    if result.status == "awaiting_approval":
        click.echo(
            f"run {result.run_id} stopped before touching anything, waiting for approval:",
            err=True,
        )
        for reason in summary["reasons"]:
            click.echo(f"  - {reason}", err=True)
        click.echo(
            f"check with `lethe purge --dry-run`, then run `lethe purge --approve {result.run_id}`",
            err=True,
        )
        return
    if result.status == "dry_run":
        click.echo(
            f"dry run {result.run_id}: {result.due} lifecycles due, nothing changed", err=True
        )
        for reason in summary["reasons"]:
            click.echo(f"  a real sweep would wait for approval: {reason}", err=True)
        return
    click.echo(
        f"run {result.run_id} {result.status}: {result.erased} lifecycles erased "
        f"({result.rows} rows), {result.failed} failed, {result.held} held",
        err=True,
    )


def _outcomes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str, str], list[int]] = {}
    for row in rows:
        key = (row["activity"], row["target"], row["outcome"])
        entry = counts.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += row["rows"]
    return [
        {"activity": a, "target": t, "outcome": o, "lifecycles": n, "rows": r}
        for (a, t, o), (n, r) in sorted(counts.items())
    ]


@main.command()
@click.option("--until", "until_text", required=True, help="forecast up to this instant (ISO)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def forecast(until_text: str, fmt: str) -> None:
    """What falls due when: lifecycles per month and activity, up to --until."""
    from sqlalchemy import func, select

    from worker.domain.sweep_rules import forecast as per_month
    from worker.store.schema import StoredLifecycle
    from worker.store.sessions import transaction

    until = now_option(until_text, "--until")
    url = store_url()
    register = configured_register()
    with transaction(url) as session:
        rows = session.execute(
            select(StoredLifecycle.activity, StoredLifecycle.deadline_at, StoredLifecycle.then)
            .where(
                StoredLifecycle.state == "active",
                StoredLifecycle.deadline_at.is_not(None),
                StoredLifecycle.deadline_at <= until,
            )
            .execution_options(yield_per=10_000)
        )
        months = per_month(rows, register.tz)
        held = session.scalar(
            select(func.count()).select_from(StoredLifecycle).where(StoredLifecycle.state == "held")
        )
    print_rows(months, fmt, ["month", "activity", "then", "lifecycles"])
    if held:
        click.echo(f"{held} held lifecycles are not forecast: they wait for their hold", err=True)


@main.group()
def hold() -> None:
    """Legal holds: a held subject is never erased, whatever its deadlines."""


@hold.command("place")
@click.argument("subject")
@click.option(
    "--reason", required=True, help="why: a case or ticket number, never a name or contact"
)
def hold_place(subject: str, reason: str) -> None:
    """Hold every lifecycle of SUBJECT (KIND:ID)."""
    from worker.pipeline.holds import HoldError, place

    try:
        hold_id = place(store_url(), subject, reason, configured_register())
    except HoldError as exc:
        raise click.ClickException(str(exc)) from None
    # the subject is not repeated on stderr, which a script's logs keep (as for lift)
    click.echo(f"hold {hold_id} placed: the subject is not erased until it is lifted", err=True)


@hold.command("lift")
@click.argument("subject")
@click.option("--reason", default="", help="why the hold ends")
def hold_lift(subject: str, reason: str) -> None:
    """Lift SUBJECT's holds: what is due is erased at the next sweep."""
    from worker.pipeline.holds import HoldError, lift

    try:
        lifted = lift(store_url(), subject, reason, configured_register())
    except HoldError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{lifted} hold(s) lifted: what is due is erased at the next sweep", err=True)


@hold.command("list")
@click.option("--subject", help="only this subject")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def hold_list(subject: str | None, fmt: str) -> None:
    """Holds placed by hand, open and lifted: subjects in clear and as the keyed hash the
    dashboard and the audit show."""
    from worker.pipeline.holds import hold_rows

    subject_or_exit(subject)  # an address typed here is refused, as by `lethe audit`
    rows = hold_rows(store_url(), settings_or_exit().secret, subject)
    print_rows(rows, fmt, ["id", "subject", "subject_ref", "placed_at", "lifted_at", "reason"])


@main.command()
@click.option("--subject", help="KIND:ID: its keyed hash is recomputed, never stored")
@click.option("--run", "run_id", type=int, help="only this run")
@click.option("--proof", is_flag=True, help="with --subject: a proof of erasure for the person")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table")
def audit(subject: str | None, run_id: int | None, proof: bool, fmt: str) -> None:
    """The erasure audit trail (keyed hashes, never personal data)."""
    from worker.store.audit import audit_rows, to_csv
    from worker.store.audit import proof as proof_of

    subject_or_exit(subject)
    url = store_url()
    settings = settings_or_exit()
    if proof:
        if not subject:
            raise click.UsageError("--proof needs --subject")
        document = proof_of(url, settings.secret, subject, configured_register())
        json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    rows = audit_rows(url, settings.secret, subject=subject, run_id=run_id)
    if not rows and (why := empty_audit_note(url, subject, run_id)):
        note(why)
    if fmt == "csv":
        sys.stdout.write(to_csv(rows))
        return
    print_rows(
        rows,
        fmt,
        ["id", "run_id", "subject_ref", "activity", "target", "outcome", "rows", "strategy"],
    )


@main.group()
def shop() -> None:
    """The shop database the register's targets point at."""


@shop.command("check")
def shop_check() -> None:
    """Check every target against the shop schema: exit 0, or 1 with `file:line: message`.

    The shop's triggers that a sweep's writes would fire are warned about, on stderr,
    without changing the exit status: what a trigger does cannot be checked.
    """
    from worker.shop.binding import (
        ShopMismatch,
        ShopUnavailable,
        bind_targets,
        fired_triggers,
        shop_engine,
    )
    from worker.shop.sources import bind_sources

    settings = settings_or_exit()
    register = configured_register()
    problems = []
    bound: dict = {}
    try:
        engine = shop_engine(settings.shop_database_url)
        try:
            bound = bind_targets(
                register,
                settings.register_path,
                engine,
                settings.secret,
                log_triggers=False,  # said below as plain lines, not as a log record
            )
        except ShopMismatch as exc:
            problems.extend(exc.problems)
        problems.extend(bind_sources(register, settings.register_path, engine)[1])
    except ShopUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if problems:
        for problem in sorted(problems, key=lambda p: p.line):
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None
    for fired in fired_triggers(bound):
        click.echo(str(fired), err=True)
    targets = sum(len(b) for b in bound.values())
    tables = len({t.table.name for b in bound.values() for t in b})
    sources = f" and {len(register.sources)} sources" if register.sources else ""
    click.echo(f"{targets} targets over {tables} tables{sources} fit the shop schema", err=True)


@main.command()
@click.option("--people", default=400, show_default=True, help="how many people the shop has")
@click.option("--seed", default=7, show_default=True, help="random seed for the demo data")
def demo(people: int, seed: int) -> None:
    """The whole story on one machine: a demo shop, years of events, nightly sweeps."""
    from worker.demo.run import run_demo

    run_demo(people=people, seed=seed)
