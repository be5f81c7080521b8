"""Prometheus metrics, read from the store at scrape time by a custom collector.

The store is the source of truth shared by every worker and beat, so the
figures are aggregate queries (GROUP BY, COUNT) run when Prometheus scrapes,
not counters kept in one process: they are the same whichever dashboard
replica is scraped, and survive restarts. Labels only ever take values from a
closed set (the register's event types and activities, states, outcomes), so
a producer's malformed event cannot put its text into a label.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from worker.brokers.consumers import Orphans
from worker.domain.durations import Duration
from worker.logs import log
from worker.ops.dashboard import figures
from worker.shop.outbox import OutboxUnavailable, backlog, has_outbox
from worker.store.schema import DeadLetter, Erasure, Hold, PurgeRun, ShopCoverage
from worker.store.sessions import now_utc, reading

UNKNOWN_TYPE = "unknown"
UNPARSABLE = "unparsable"
# Finished sweeps; a dry run changes nothing and a running one has no duration yet.
_FINISHED = ("done", "failed")


class LetheCollector(Collector):
    """Runs a handful of aggregate queries per scrape; `lethe_store_up` 0 when it cannot."""

    def __init__(
        self,
        database_url: str,
        grace: Duration = figures.DEFAULT_GRACE,
        known_types: Iterable[str] = (),
        clock: Callable[[], datetime] = now_utc,
        orphans: Callable[[], Orphans | None] | None = None,
        shop_database_url: str | None = None,
    ):
        self.orphans = orphans
        self.database_url = database_url
        self.shop_database_url = shop_database_url
        self.grace = grace
        self.known_types = frozenset(known_types)
        self.clock = clock

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        yield from self._orphans()
        up = GaugeMetricFamily("lethe_store_up", "1 when Lethe's store answered this scrape")
        try:
            with reading(self.database_url) as session:
                metrics = list(self._read(session, self.clock()))
        except SQLAlchemyError as exc:
            log.warning("metrics: store unavailable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics
        yield from self._outbox()
        yield GaugeMetricFamily(
            "lethe_metrics_collect_seconds",
            "Time the store's aggregate queries took for this scrape",
            value=time.perf_counter() - started,
        )

    def _orphans(self) -> Iterable[Metric]:
        """On Redis: messages held by workers whose heartbeat stopped (a running worker gives
        them back within seconds; none runs while these stay above 0)."""
        found = self.orphans() if self.orphans else None
        if found is None:
            return
        yield GaugeMetricFamily(
            "lethe_broker_orphaned_messages",
            "Messages held unacknowledged by workers whose heartbeat stopped",
            value=found.messages,
        )
        yield GaugeMetricFamily(
            "lethe_broker_orphaned_seconds",
            "Since the longest-silent worker holding such messages last beat (0: none)",
            value=found.oldest_seconds,
        )

    def _read(self, session: Session, now: datetime) -> Iterable[Metric]:
        by_state = GaugeMetricFamily(
            "lethe_lifecycles",
            "Lifecycles by activity and state (due: deadline passed, not yet erased)",
            labels=["activity", "state"],
        )
        overdue = GaugeMetricFamily(
            "lethe_lifecycles_overdue",
            f"Lifecycles due for more than the grace period ({self.grace}) and not erased",
            labels=["activity"],
        )
        for row in figures.lifecycle_figures(session, now, self.grace):
            for state in ("active", "due", "held", "erased"):
                by_state.add_metric([row.activity, state], getattr(row, state))
            overdue.add_metric([row.activity], row.overdue)
        yield by_state
        yield overdue

        ingested = GaugeMetricFamily(
            "lethe_events_ingested",
            "Events in the store's log by type (an id sent twice counts once)",
            labels=["type"],
        )
        for event_type, count in self._closed(figures.events_by_type(session)).items():
            ingested.add_metric([event_type], count)
        yield ingested

        refused = GaugeMetricFamily(
            "lethe_events_refused",
            "Refused events kept as dead letters, by type "
            f"('{UNKNOWN_TYPE}': not in the register, '{UNPARSABLE}': no readable type)",
            labels=["type"],
        )
        for event_type, count in self._closed(self._refused_by_type(session)).items():
            refused.add_metric([event_type], count)
        yield refused
        yield GaugeMetricFamily(
            "lethe_dead_letters",
            "Events waiting as dead letters (`lethe dead-letters`)",
            value=session.scalar(select(func.count()).select_from(DeadLetter)) or 0,
        )
        yield GaugeMetricFamily(
            "lethe_holds_active",
            "Legal holds placed by hand and not lifted",
            value=session.scalar(
                select(func.count()).select_from(Hold).where(Hold.lifted_at.is_(None))
            )
            or 0,
        )
        yield from self._sweeps(session)
        yield from self._coverage(session)

    def _coverage(self, session: Session) -> Iterable[Metric]:
        # the coverage task's stored counts (tasks/coverage.py): a scan of the shop's
        # tables is far too slow for a scrape, and a scrape must not reach the shop
        uncovered = GaugeMetricFamily(
            "lethe_shop_uncovered_rows",
            "Shop rows a target would touch that no lifecycle covers (never erased)",
            labels=["table", "activity"],
        )
        back = GaugeMetricFamily(
            "lethe_shop_back_rows",
            "Shop rows back after their erasure (a restore): `lethe purge --reapply`",
            labels=["table", "activity"],
        )
        rows = session.execute(
            select(
                ShopCoverage.table_name,
                ShopCoverage.activity,
                func.sum(ShopCoverage.uncovered),
                func.sum(ShopCoverage.back),
            ).group_by(ShopCoverage.table_name, ShopCoverage.activity)
        )
        for table, activity, n_uncovered, n_back in rows:
            uncovered.add_metric([table, activity], n_uncovered or 0)
            back.add_metric([table, activity], n_back or 0)
        yield uncovered
        yield back

    def _outbox(self) -> Iterable[Metric]:
        """The shop's outbox backlog, when the shop database has one (`lethe outbox install`)."""
        if self.shop_database_url is None or not has_outbox(self.shop_database_url):
            return
        try:
            waiting = backlog(self.shop_database_url)
        except OutboxUnavailable:
            log.warning("metrics: shop outbox unavailable")
            return
        yield GaugeMetricFamily(
            "lethe_outbox_pending",
            "Rows waiting in the shop database's lethe_outbox for the relay",
            value=waiting.pending,
        )
        yield GaugeMetricFamily(
            "lethe_outbox_oldest_seconds",
            "How long the oldest row of lethe_outbox has waited (0 when none waits)",
            value=waiting.oldest_seconds or 0.0,
        )

    def _sweeps(self, session: Session) -> Iterable[Metric]:
        runs = GaugeMetricFamily("lethe_sweeps", "Sweeps recorded, by status", labels=["status"])
        for status, count in session.execute(
            select(PurgeRun.status, func.count()).group_by(PurgeRun.status)
        ):
            runs.add_metric([status], count)
        yield runs

        # from the approval when it waited for one, as figures.Sweep.duration
        began = func.coalesce(PurgeRun.approved_at, PurgeRun.started_at)
        finished = list(
            session.execute(
                select(began, PurgeRun.finished_at).where(
                    PurgeRun.status.in_(_FINISHED), PurgeRun.finished_at.is_not(None)
                )
            ).tuples()
        )
        total = sum((end - start).total_seconds() for start, end in finished)
        yield SummaryMetricFamily(
            "lethe_sweep_duration_seconds",
            "Duration of finished sweeps",
            count_value=len(finished),
            sum_value=total,
        )
        last = figures.last_finished_sweep(session)
        if last is not None and last.duration is not None:
            yield GaugeMetricFamily(
                "lethe_sweep_last_duration_seconds",
                "Duration of the last sweep",
                value=last.duration,
            )
            yield GaugeMetricFamily(
                "lethe_sweep_last_finished_timestamp_seconds",
                "When the last sweep finished (Unix time)",
                value=last.finished_at.timestamp(),
            )
        erasures = CounterMetricFamily(
            "lethe_erasures",
            "Erasure audit records by activity and outcome (the audit is append-only)",
            labels=["activity", "outcome"],
        )
        for activity, outcome, count in session.execute(
            select(Erasure.activity, Erasure.outcome, func.count()).group_by(
                Erasure.activity, Erasure.outcome
            )
        ):
            erasures.add_metric([activity, outcome], count)
        yield erasures

    def _refused_by_type(self, session: Session) -> dict[str | None, int]:
        payload = DeadLetter.payload
        if session.get_bind().dialect.name == "postgresql":
            # A dead letter may not be JSON at all (that may be why it was refused),
            # so the type is read with a pattern, not a cast that would fail.
            event_type = func.substring(payload, r'"type"\s*:\s*"([^"]{1,100})"')
        else:
            event_type = case(
                (func.json_valid(payload) == 1, func.json_extract(payload, "$.type")),
                else_=None,
            )
        query = select(event_type, func.count()).group_by(event_type)
        return {t: int(n) for t, n in session.execute(query)}

    def _closed(self, counts: dict[str | None, int]) -> dict[str, int]:
        """Counts keyed by known type only: anything else is folded into two fixed labels."""
        folded: dict[str, int] = {}
        for event_type, count in counts.items():
            if event_type is None:
                label = UNPARSABLE
            elif isinstance(event_type, str) and event_type in self.known_types:
                label = event_type
            else:
                label = UNKNOWN_TYPE
            folded[label] = folded.get(label, 0) + count
        return folded
