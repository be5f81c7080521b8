"""Backfill: the register's sources read from the shop's rows and sent as events through the
same queue as `emit_many`, so a customer who last ordered years before Lethe gets a
lifecycle (and a deadline) like one who orders tomorrow.

Each row's event id comes from the source's `id` template, so a second backfill sends
events the store already holds: counted as duplicates, nothing changes. The rows are
streamed (worker/shop/sources.py) and the events sent in `emit_many`'s batches, so a
million rows never sit in memory at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from worker.client import EventInvalid, build_event, emit_many
from worker.domain.hashing import subject_ref
from worker.domain.register import Register
from worker.domain.sources import Skipped, fill, instant_of, placeholders
from worker.settings import Settings
from worker.shop.binding import ShopMismatch, shop_engine
from worker.shop.sources import BoundSource, bind_sources, read_rows
from worker.store.schema import Backfill, Erasure
from worker.store.sessions import ONE_OF_CHUNK, chunks, now_utc, one_of, reading, transaction


@dataclass
class SourceReport:
    """What a backfill did with one source: rows read, events sent (or, in a dry run, that
    it would send), rows skipped (NULL or zero `at`, a NULL in the subject or id), rows
    after `--until`, events refused by the event checks, and the instants' range."""

    index: int
    event: str
    origin: str
    rows: int = 0
    events: int = 0
    skipped: int = 0
    later: int = 0
    refused: int = 0
    earliest: datetime | None = None
    latest: datetime | None = None
    skipped_by: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.index,
            "event": self.event,
            "from": self.origin,
            "rows": self.rows,
            "events": self.events,
            "skipped": self.skipped,
            "skipped_by": dict(sorted(self.skipped_by.items())),
            "after_until": self.later,
            "refused": self.refused,
            "earliest": self.earliest.isoformat() if self.earliest else None,
            "latest": self.latest.isoformat() if self.latest else None,
        }


def chosen_sources(settings: Settings, register: Register, only: int | None) -> list[BoundSource]:
    """The register's sources bound to the shop schema (all, or number `only`, 1-based);
    raises ShopMismatch with `file:line` problems, ValueError for a bad `only`."""
    if not register.sources:
        raise ValueError(
            "the register has no sources: add a `sources:` list saying which shop rows tell "
            "which events (docs/shop-history.md)"
        )
    if only is not None and not 1 <= only <= len(register.sources):
        raise ValueError(
            f"there is no source {only}: the register has {len(register.sources)} "
            f"(numbered 1 to {len(register.sources)} in the order they are written)"
        )
    engine = shop_engine(settings.shop_database_url)
    bound, problems = bind_sources(register, settings.register_path, engine)
    if problems:
        raise ShopMismatch(problems)
    return [b for b in bound if only is None or b.index == only]


def backfill(
    settings: Settings,
    register: Register,
    sources: list[BoundSource],
    *,
    until: datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    on_source: Callable[[BoundSource], None] | None = None,
) -> list[SourceReport]:
    """Read each source and send its events (or, with `dry_run`, only count them).

    `progress(n)` is called with the rows read since its last call; `on_source` before
    each source. A real backfill is recorded in the store, so the next sweep waits for
    a DPO's approval (worker/sweeps/plan.py).
    """
    engine = shop_engine(settings.shop_database_url)
    record = None if dry_run else _record_start(settings, sources)
    reports = []
    for bound in sources:
        if on_source:
            on_source(bound)
        report = SourceReport(bound.index, bound.source.event, bound.source.origin)
        reports.append(report)
        events = _not_erased_before(
            settings, _events(engine, bound, register.timezone, until, report, progress), report
        )
        if dry_run:
            for event in events:
                try:
                    build_event(**event)
                except EventInvalid as exc:
                    report.refused += 1
                    report.events -= 1
                    report.reasons[_reason(str(exc))] += 1
        else:
            sent = emit_many(events)
            report.refused = len(sent.refused)
            report.events = sent.sent
            for _, reason in sent.refused:
                report.reasons[_reason(reason)] += 1
    if record is not None:
        _record_end(settings, record, reports)
    return reports


def _reason(text: str) -> str:
    # the first clause only: enough to tell kinds of refusal apart in a summary
    return text.split(":", 1)[0][:120]


def _events(
    engine: Any,
    bound: BoundSource,
    zone: str,
    until: datetime | None,
    report: SourceReport,
    progress: Callable[[int], None] | None,
) -> Iterator[dict[str, Any]]:
    source = bound.source
    needed = set(placeholders(source.subject)) | set(placeholders(source.id))
    pending = 0
    for row in read_rows(engine, bound):
        report.rows += 1
        pending += 1
        if progress and pending >= 500:
            progress(pending)
            pending = 0
        at = instant_of(row[source.at], zone)
        if isinstance(at, Skipped):
            report.skipped += 1
            report.skipped_by[at.reason] += 1
            continue
        if any(row[name] is None for name in needed):
            report.skipped += 1
            report.skipped_by["null_key"] += 1
            continue
        if until is not None and at > until:
            report.later += 1
            continue
        data = {
            name: fill(template, row)
            for name, template in source.data.items()
            if all(row[n] is not None for n in placeholders(template))
        }
        report.events += 1
        report.earliest = at if report.earliest is None else min(report.earliest, at)
        report.latest = at if report.latest is None else max(report.latest, at)
        yield {
            "type": source.event,
            "subject": fill(source.subject, row),
            "occurred_at": at,
            "id": fill(source.id, row),
            "data": data,
        }
    if progress and pending:
        progress(pending)


def _not_erased_before(
    settings: Settings, events: Iterator[dict[str, Any]], report: SourceReport
) -> Iterator[dict[str, Any]]:
    """The events, less those about a person the audit shows erased after the event's
    instant: their row is what the erasure left (anonymised, kept by law), or a row back
    after a restore, which `lethe purge --reapply` erases again. Sent, it would give a
    person Lethe has forgotten a lifecycle again, and erase them once more."""
    for batch in chunks(events, ONE_OF_CHUNK):
        refs = {subject_ref(settings.secret, e["subject"]) for e in batch}
        with reading(settings.database_url) as session:
            erased = dict(
                session.execute(
                    select(Erasure.subject_ref, func.max(Erasure.erased_at))
                    .where(
                        one_of(Erasure.subject_ref, sorted(refs), session.get_bind()),
                        Erasure.outcome.in_(("erased", "reapplied")),
                    )
                    .group_by(Erasure.subject_ref)
                ).all()
            )
        for event in batch:
            last = erased.get(subject_ref(settings.secret, event["subject"]))
            if last is not None and event["occurred_at"] <= last:
                report.events -= 1
                report.skipped += 1
                report.skipped_by["erased_before"] += 1
                continue
            yield event


def _record_start(settings: Settings, sources: list[BoundSource]) -> int:
    with transaction(settings.database_url) as session:
        record = Backfill(
            started_at=now_utc(), sources=",".join(str(b.index) for b in sources), rows=0
        )
        session.add(record)
        session.flush()
        return record.id


def _record_end(settings: Settings, record_id: int, reports: list[SourceReport]) -> None:
    with transaction(settings.database_url) as session:
        record = session.get(Backfill, record_id)
        record.finished_at = now_utc()
        record.rows = sum(r.rows for r in reports)
        record.events = sum(r.events for r in reports)
        record.skipped = sum(r.skipped for r in reports)
        record.refused = sum(r.refused for r in reports)
