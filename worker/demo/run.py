"""`lethe demo`: the whole story on one machine, in under a minute.

A demo shop database is built (SQLite by default), years of the shop's events
are replayed on a simulated clock through the real path (`emit_many` -> broker
-> a real worker process), and at each simulated new year the worker runs the
nightly sweep beat would run. The demo prints what was erased, what the law
keeps, what a dispute or a hold keeps, and a few rows before and after.

It runs in its own home (`$LETHE_HOME/demo`, wiped first) and never touches
the configured shop database. With LETHE_BROKER_URL and LETHE_DATABASE_URL set
it uses that broker and that store, which must hold no events yet.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

from worker.demo.data import OUTBOUND_STORY, DemoData, Person, generate
from worker.demo.process import DemoError, start_worker, stop, stop_on_hangup

SHOWN_COLUMNS = {
    "customers": ["id", "email", "first_name", "last_name", "phone", "birth_date", "postcode"],
    "invoices": ["number", "billing_name", "billing_postcode", "customer_email", "amount_incl_tax"],
    "newsletter_subscribers": ["subject", "email", "first_name"],
}


def run_demo(
    people: int = 400, seed: int = 7, shop_url: str | None = None, out: Callable = click.echo
) -> dict[str, Any]:
    """Run the demo; returns its figures (the integration test reads them)."""
    started = time.monotonic()
    home = _fresh_home()
    settings = _demo_settings(home, shop_url)
    from worker.store.migrate import SchemaNotReady, ensure_schema

    try:
        ensure_schema(settings)
    except SchemaNotReady as exc:
        raise DemoError(str(exc)) from None
    _refuse_a_used_store(settings.database_url)
    # a few customers from the shop's years before Lethe: the backfill's chapter
    data = generate(people=people, seed=seed, legacy=max(2, people // 40))
    out(click.style("Lethe demo", bold=True) + f": {_where(settings)}")
    _build_shop(settings.shop_database_url, data, out)
    _show_rows("before", settings.shop_database_url, data.featured, data, out)
    stop_on_hangup()
    worker = start_worker(settings, home)
    try:
        figures = _replay(settings, data, out)
        figures.update(_before_lethe(settings, data, out, figures))
    finally:
        stop(worker)
    _show_rows("after", settings.shop_database_url, data.featured, data, out)
    figures.update(_epilogue(settings, data, out))
    figures["seconds"] = round(time.monotonic() - started, 1)
    out(f"\ndone in {figures['seconds']} s; the demo's files are in {home}")
    return figures


# -- set-up ---------------------------------------------------------------------------------


def _fresh_home() -> Path:
    base = Path(os.environ.get("LETHE_HOME") or "var").resolve()
    home = base / "demo"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return home


def _demo_settings(home: Path, shop_url: str | None) -> Any:
    from worker.domain.register_file import RegisterError, default_register_path
    from worker.runtime import runtime
    from worker.settings import current_settings

    os.environ["LETHE_HOME"] = str(home)
    os.environ["LETHE_SHOP_DATABASE_URL"] = shop_url or f"sqlite:///{home / 'shop.sqlite3'}"
    # The demo shop's schema is the one the shipped register's targets describe.
    os.environ["LETHE_REGISTER"] = str(default_register_path())
    current_settings.cache_clear()
    runtime.cache_clear()
    settings = current_settings()
    try:
        runtime()
    except RegisterError as exc:  # the shipped register missing or damaged in this install
        raise DemoError(f"{exc}\nreinstall Lethe (pip install .) to restore it") from None
    # The demo's story goes to stdout; library chatter stays out of it.
    for name in ("kombu", "alembic", "celery"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "worker.app" in sys.modules:
        from worker.app import app, celery_config

        app.conf.update(celery_config(settings))
        app.lethe_settings = settings
    return settings


def _where(settings: Any) -> str:
    from worker.settings import safe_url

    broker = "embedded broker" if settings.embedded else safe_url(settings.broker_url)
    store, shop = safe_url(settings.database_url), safe_url(settings.shop_database_url)
    return f"{broker}, store {store}, shop {shop}"


def _refuse_a_used_store(url: str) -> None:
    from worker.store.schema import StoredEvent
    from worker.store.sessions import transaction

    with transaction(url) as session:
        used = session.scalar(sa.select(sa.func.count()).select_from(StoredEvent))
    if used:
        raise DemoError(
            f"the store already holds {used} events: run the demo on an empty store "
            "(unset LETHE_DATABASE_URL for the embedded default, or point it at a new database)"
        )


def _build_shop(url: str, data: DemoData, out: Callable) -> None:
    from worker.demo.shop import build_shop

    build_shop(url, data.rows)
    counts = ", ".join(f"{len(rows)} {name}" for name, rows in data.rows.items() if rows)
    out(f"demo shop built: {counts}")
    first, last = data.events[0]["occurred_at"][:4], data.events[-1]["occurred_at"][:10]
    out(f"{len(data.events)} events from {first} to {last}")


def _replay(settings: Any, data: DemoData, out: Callable) -> dict[str, Any]:
    from schedules.beat import NIGHTLY_SWEEP
    from worker.client import emit_many
    from worker.runtime import runtime

    register = runtime().register
    years = sorted({e["occurred_at"][:4] for e in data.events})
    by_year = {y: [e for e in data.events if e["occurred_at"][:4] == y] for y in years}
    figures: dict[str, Any] = {"sweeps": [], "approvals": 0}
    out("")
    out(click.style("Replaying the shop's years; one nightly sweep at each new year", bold=True))
    for year in years:
        events = by_year[year]
        with click.progressbar(
            length=len(events), label=f"{year}: emitting {len(events)} events", file=sys.stderr
        ) as bar:
            report = emit_many(events, progress=bar.update)
        _wait_stored(settings.database_url, report.ids)
        last = year == years[-1]
        now = _last_night(data, register.tz) if last else _new_year(int(year) + 1, register.tz)
        if last:
            figures["held_by_hand"] = _hold_one(settings, register, data, now, out)
        run = _nightly(settings, register, NIGHTLY_SWEEP, now, out, figures)
        if last:
            # A second beat (or a clock jump) ticking for the same night: a no-op.
            _send_sweep(NIGHTLY_SWEEP, now)
            runs = _slot_runs(settings.database_url, NIGHTLY_SWEEP, now)
            figures["runs_for_last_slot"] = runs
            out(f"      a second beat ticks for the same night: a no-op ({runs} run for that slot)")
        figures["sweeps"].append(run)
    return figures


def _before_lethe(settings: Any, data: DemoData, out: Callable, figures: dict) -> dict[str, Any]:
    from datetime import timedelta

    from schedules.beat import NIGHTLY_SWEEP
    from worker.demo.history import show_access, show_backfill
    from worker.runtime import runtime

    register = runtime().register
    night = _last_night(data, register.tz) + timedelta(days=1)

    def sweep(now: datetime) -> Any:
        return _nightly(settings, register, NIGHTLY_SWEEP, now, out, figures)

    found = show_backfill(settings, data, out, sweep, night)
    found.update(show_access(settings, data, out))
    return found


def _last_night(data: DemoData, tz: Any) -> datetime:
    import pendulum

    last = pendulum.parse(data.events[-1]["occurred_at"]).in_timezone(tz)
    night = pendulum.datetime(last.year, last.month, last.day, 3, 0, tz=tz)
    return (night if night > last else night.add(days=1)).in_timezone("UTC")


def _new_year(year: int, tz: Any) -> datetime:
    import pendulum

    return pendulum.datetime(year, 1, 1, 3, 0, tz=tz).in_timezone("UTC")


def _wait_stored(url: str, ids: list[str], timeout: float = 120) -> None:
    """Until these events are in the store: counted by id, not in all, since each sweep
    forgets people erased more than LETHE_FORGET_AFTER_DAYS of the demo's years ago."""
    from worker.store.schema import StoredEvent
    from worker.store.sessions import ONE_OF_CHUNK, chunks, one_of, transaction

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = 0
        with transaction(url) as session:
            for chunk in chunks(ids, ONE_OF_CHUNK):
                stored += session.scalar(
                    sa.select(sa.func.count())
                    .select_from(StoredEvent)
                    .where(one_of(StoredEvent.id, chunk, session.get_bind()))
                )
        if stored >= len(ids):
            return
        time.sleep(0.05)
    raise DemoError(f"only {stored} of {len(ids)} events reached the store in {timeout:g} s")


def _send_sweep(schedule: str, now: datetime, run_id: int | None = None) -> None:
    from schedules.beat import SWEEP_TASK
    from worker.app import app

    kwargs: dict[str, Any] = {"schedule": schedule, "now": now.isoformat()}
    if run_id is not None:
        kwargs["run_id"] = run_id
    app.send_task(SWEEP_TASK, kwargs=kwargs)


def _nightly(
    settings: Any, register: Any, schedule: str, now: datetime, out: Callable, figures: dict
) -> dict[str, Any]:
    from worker.sweeps.run import approve

    _send_sweep(schedule, now)
    run = _wait_run(settings, schedule, now)
    if run["status"] == "awaiting_approval":
        out(f"      sweep of {_local(now, register)} stopped before touching anything:")
        for reason in run["reasons"]:
            out(f"        - {reason}")
        out(f"      the DPO checks the dry run and approves: lethe purge --approve {run['id']}")
        approve(settings, register, run["id"])
        figures["approvals"] += 1
        _send_sweep(schedule, now, run_id=run["id"])
        run = _wait_run(settings, schedule, now)
    out(_sweep_line(settings, run, now, register))
    return run


def _wait_run(settings: Any, schedule: str, now: datetime, timeout: float = 120) -> dict[str, Any]:
    import json

    from schedules.beat import slot_for
    from worker.store.schema import PurgeRun
    from worker.store.sessions import transaction

    slot = slot_for(now, settings.sweep.at, settings.sweep.timezone)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with transaction(settings.database_url) as session:
            run = session.scalar(
                sa.select(PurgeRun).where(PurgeRun.schedule == schedule, PurgeRun.slot_at == slot)
            )
            if run is not None and run.status in ("done", "awaiting_approval", "failed"):
                plan = json.loads(run.plan) if run.plan else {}
                return {
                    "id": run.id,
                    "status": run.status,
                    "due": run.due,
                    "held": run.held,
                    "erased": run.erased,
                    "failed": run.failed,
                    "rows": run.rows,
                    "note": run.note,
                    "reasons": plan.get("reasons", []),
                }
        time.sleep(0.05)
    raise DemoError(f"the sweep of {now.isoformat()} did not finish in {timeout:g} s")


def _slot_runs(url: str, schedule: str, now: datetime) -> int:
    from schedules.beat import slot_for
    from worker.settings import current_settings
    from worker.store.schema import PurgeRun
    from worker.store.sessions import transaction

    sweep = current_settings().sweep
    time.sleep(1.0)  # let the worker take the second tick
    slot = slot_for(now, sweep.at, sweep.timezone)
    with transaction(url) as session:
        return session.scalar(
            sa.select(sa.func.count())
            .select_from(PurgeRun)
            .where(PurgeRun.schedule == schedule, PurgeRun.slot_at == slot)
        )


def _sweep_line(settings: Any, run: dict[str, Any], now: datetime, register: Any) -> str:
    from worker.store.schema import Erasure
    from worker.store.sessions import transaction

    with transaction(settings.database_url) as session:
        outcomes = session.execute(
            sa.select(
                Erasure.activity, Erasure.outcome, sa.func.count(Erasure.subject_ref.distinct())
            )
            .where(Erasure.run_id == run["id"])
            .group_by(Erasure.activity, Erasure.outcome)
        ).all()
    erased: Counter[str] = Counter()
    kept = 0
    for activity, outcome, n in outcomes:
        if outcome in ("erased", "nothing_to_erase"):
            erased[activity] += n
        elif outcome == "kept_by_law":
            kept += n
    parts = ", ".join(f"{a} {n}" for a, n in sorted(erased.items())) or "nothing due"
    line = f"      sweep {_local(now, register)}: {run['erased']} lifecycles erased"
    line += f" ({run['rows']} rows) [{parts}]"
    if kept:
        line += f"; invoices kept by law: {kept}"
    if run["held"]:
        line += f"; held: {run['held']}"
    if run["status"] == "failed":
        line += f"; FAILED: {run['note']}"
    return line


def _local(moment: datetime, register: Any) -> str:
    import pendulum

    return pendulum.instance(moment).in_timezone(register.tz).format("YYYY-MM-DD HH:mm")


def _hold_one(
    settings: Any, register: Any, data: DemoData, now: datetime, out: Callable
) -> str | None:
    """A DPO holds one customer who falls due at the last sweep: the sweep passes them by."""
    from worker.pipeline.holds import place
    from worker.store.schema import StoredLifecycle
    from worker.store.sessions import transaction

    with transaction(settings.database_url) as session:
        subject = session.scalar(
            sa.select(StoredLifecycle.subject)
            .where(
                StoredLifecycle.activity == "crm.customers",
                StoredLifecycle.state == "active",
                StoredLifecycle.deadline_at <= now,
            )
            .order_by(StoredLifecycle.deadline_at.desc())
            .limit(1)
        )
    if subject is None:
        return None
    place(
        settings.database_url,
        subject,
        "tax audit 2026-17: keep everything until it closes",
        register,
    )
    out(f"      the DPO places a hold on {subject} (lethe hold place {subject} --reason ...)")
    data.featured.append(
        Person("held by hand", subject, "customers", "id", int(subject.split(":")[1]))
    )
    return subject


# -- before / after and the epilogue ---------------------------------------------------------


def _show_rows(when: str, url: str, featured: list[Person], data: DemoData, out: Callable) -> None:
    engine = sa.create_engine(url)
    out("")
    out(click.style(f"A few rows {when}", bold=True))
    metadata = sa.MetaData()
    metadata.reflect(engine, only=list(SHOWN_COLUMNS))
    with engine.connect() as connection:
        for person in featured:
            table = metadata.tables[person.table]
            columns = SHOWN_COLUMNS[person.table]
            row = connection.execute(
                sa.select(*(table.c[c] for c in columns)).where(
                    table.c[person.key] == person.key_value
                )
            ).first()
            shown = _cells(row, columns) if row else "(row deleted)"
            out(f"  {person.role:<28} {person.table}: {shown}")
            if person.table == "customers":
                invoices = metadata.tables["invoices"]
                inv = connection.execute(
                    sa.select(*(invoices.c[c] for c in SHOWN_COLUMNS["invoices"]))
                    .where(invoices.c.customer_id == person.key_value)
                    .order_by(invoices.c.id)
                ).first()
                shown = _cells(inv, SHOWN_COLUMNS["invoices"]) if inv else "(no invoice left)"
                out(f"  {'':<28} invoices:  {shown}")
    engine.dispose()


def _cells(row: Any, columns: list[str]) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True))


def _outbound_story(url: str, subject: str, out: Callable) -> str:
    """What the shop's own call did to the customer file: nothing (CNIL, "dernier contact
    émanant du prospect"), so the file went at the end of the 5 years after the last order."""
    from worker.store.schema import StoredLifecycle
    from worker.store.sessions import transaction

    with transaction(url) as session:
        found = session.execute(
            sa.select(StoredLifecycle.state, StoredLifecycle.deadline_at).where(
                StoredLifecycle.subject == subject, StoredLifecycle.activity == "crm.customers"
            )
        ).first()
    state, deadline = found if found else ("none", None)
    out(
        f"  {subject}: called by the shop (contact.made, direction outbound) before the 5 "
        f"years ran out; crm.customers {state}, deadline {deadline:%Y-%m-%d}, 5 years after "
        "the last order (only the person's own contact renews)"
        if deadline
        else f"  {subject}: called by the shop; crm.customers {state}"
    )
    return str(state)


def _epilogue(settings: Any, data: DemoData, out: Callable) -> dict[str, Any]:
    from worker.client import is_suppressed
    from worker.runtime import runtime
    from worker.store.audit import audit_rows, proof, to_csv
    from worker.store.schema import StoredLifecycle
    from worker.store.sessions import transaction

    register = runtime().register
    rows = audit_rows(settings.database_url, settings.secret)
    outcomes = Counter(r["outcome"] for r in rows)
    with transaction(settings.database_url) as session:
        states = Counter(
            dict(
                session.execute(
                    sa.select(StoredLifecycle.state, sa.func.count()).group_by(
                        StoredLifecycle.state
                    )
                ).all()
            )
        )
    out("")
    out(click.style("The audit trail", bold=True))
    out(
        f"  {len(rows)} audit rows: "
        + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        + f"; lifecycles now: {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}"
    )
    trail = to_csv(rows).lower()
    leaked = [e for e in data.emails.values() if e.lower() in trail]
    found = f"{len(leaked)} addresses!" if leaked else "none"
    out(f"  personal data in the audit trail: {found} (people appear as keyed hashes only)")
    figures: dict[str, Any] = {
        "audit_rows": len(rows),
        "outcomes": dict(outcomes),
        "leaked": len(leaked),
    }
    for person in data.featured:
        if person.role.startswith("asked for erasure"):
            document = proof(settings.database_url, settings.secret, person.subject, register)
            command = f"lethe audit --subject {person.subject} --proof"
            out(f"  proof of erasure for {person.subject} ({command}):")
            out(
                f"    requested {', '.join(document['erasure_requested_at'])}; erased: "
                f"{', '.join(document['erased_activities'])}"
            )
            for kept in document["not_yet_erased"]:
                out(f"    kept: {kept['activity']} until {kept['until']} ({kept['state']})")
            digest = document["audit_digest"][:23]
            out(f"    digest of its {document['audit_rows']} audit rows: {digest}...")
            figures["proof"] = document
        if person.role == OUTBOUND_STORY:
            figures["outbound"] = _outbound_story(settings.database_url, person.subject, out)
        if person.role == "left the newsletter":
            email = data.emails[person.subject]
            suppressed = is_suppressed(email)
            out(
                f"  worker.client.is_suppressed(<{person.subject}'s address>) = {suppressed}"
                " (the address itself is gone; its keyed hash stays in the suppression list"
                f" for {settings.sweep.suppression_days} days after the sweep that erased it)"
            )
            figures["suppressed"] = suppressed
    return figures
