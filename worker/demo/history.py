"""`lethe demo`'s last chapter: the shop's rows from before Lethe found by `lethe shop
coverage`, given their events by `lethe backfill`, erased by the sweep after it (which waits
for the DPO), and one person's art. 15 answer (`lethe access`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
import sqlalchemy as sa

from worker.demo.data import DemoData
from worker.demo.process import DemoError


def show_backfill(
    settings: Any, data: DemoData, out: Callable, sweep: Callable[[datetime], Any], now: datetime
) -> dict[str, Any]:
    """Coverage, backfill (dry run, then for real), a sweep, coverage again."""
    from worker.pipeline.backfill import backfill, chosen_sources
    from worker.runtime import runtime

    register = runtime().register
    out("")
    out(click.style("The shop's rows from before Lethe", bold=True))
    uncovered = _uncovered_customers(settings, register)
    out(
        f"  lethe shop coverage: {uncovered} customers rows no lifecycle covers: no event ever "
        "named them, so they would never be erased"
    )
    sources = chosen_sources(settings, register, None)
    out("  lethe backfill --dry-run (the register's sources: which rows tell which events):")
    dry = backfill(settings, register, sources, dry_run=True)
    for r in dry:
        span = f"{_day(r.earliest)} to {_day(r.latest)}" if r.events else "-"
        out(
            f"    #{r.index} {r.event} from {r.origin}: {r.rows} rows, {r.events} events, "
            f"{r.skipped} skipped ({span})"
        )
    total = sum(r.events for r in dry)
    with click.progressbar(length=total, label="  lethe backfill", file=sys.stderr) as bar:
        reports = backfill(settings, register, sources, progress=bar.update)
    sent = sum(r.events for r in reports)
    _wait_backfilled(settings.database_url, sent)
    out(
        f"  {sent} events sent through the queue; the ones the store already had from the "
        "live shop change nothing, the others give old customers their lifecycles"
    )
    sweep(now)
    after = _uncovered_customers(settings, register)
    out(f"  lethe shop coverage: {after} customers rows uncovered now")
    return {"backfill_events": sent, "uncovered_before": uncovered, "uncovered_after": after}


def _day(moment: datetime | None) -> str:
    return moment.date().isoformat() if moment else "-"


def _uncovered_customers(settings: Any, register: Any) -> int:
    from worker.sweeps.coverage import measure_coverage

    rows = measure_coverage(settings, register, store=True)
    return sum(r.uncovered for r in rows if (r.activity, r.table) == ("crm.customers", "customers"))


def _wait_backfilled(url: str, sent: int, timeout: float = 120) -> None:
    """Until every backfilled event is in the store (or refused as a dead letter)."""
    from worker.store.schema import DeadLetter, StoredEvent
    from worker.store.sessions import transaction

    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        with transaction(url) as session:
            done = session.scalar(
                sa.select(sa.func.count())
                .select_from(StoredEvent)
                .where(StoredEvent.id.like("backfill-%"))
            ) + session.scalar(
                sa.select(sa.func.count())
                .select_from(DeadLetter)
                .where(DeadLetter.event_id.like("backfill-%"))
            )
        if done >= sent:
            return
        time.sleep(0.1)
    raise DemoError(f"only {done} of {sent} backfilled events reached the store in {timeout:g} s")


def show_access(settings: Any, data: DemoData, out: Callable) -> dict[str, Any]:
    """One person's art. 15 answer, in short (the whole of it: `lethe access SUBJECT`)."""
    from worker.ops.access import access_report
    from worker.runtime import runtime

    register = runtime().register
    subject = next((p.subject for p in data.featured if p.table == "customers"), None)
    if subject is None:
        return {}
    report = access_report(settings, register, subject, {})
    out("")
    out(click.style(f"What the shop holds about {subject} (lethe access {subject})", bold=True))
    for a in report["activities"]:
        lifecycle = a["lifecycle"] or {}
        rows = sum(t["rows"] for t in a["shop_rows"])
        bases = ", ".join(sorted({p["legal_basis"] for p in a["purposes"]}))
        out(
            f"  {a['activity']}: {lifecycle.get('state', 'no lifecycle')}, deadline "
            f"{lifecycle.get('deadline_at') or '-'}, {rows} shop rows, basis {bases}"
            + (f", {len(a['erasures'])} erasure(s) audited" if a["erasures"] else "")
        )
    out("  (--format html gives a page in French and English to send to the person)")
    return {"access_activities": len(report["activities"])}
