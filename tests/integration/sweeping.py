"""What the sweep tests share: a demo shop on SQLite or PostgreSQL, a store seeded with its
events, and readers for the shop rows, the audit trail and the lifecycles."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from harness import Lethe

from worker.demo.data import DemoData, generate
from worker.demo.shop import create_schema, metadata

# Far enough after the demo data that many lifecycles are due, before the invoices' 10 years.
NOW = "2026-11-26T03:00:00+01:00"
EARLY = "2019-01-01T03:00:00+01:00"
# What an invoice keeps for 10 years (CGI art. 242 nonies A), see registers/negomarkets.yaml.
LEGAL = [
    "number",
    "issued_at",
    "billing_name",
    "billing_street",
    "billing_postcode",
    "billing_city",
    "amount_excl_tax",
    "vat",
    "amount_incl_tax",
]


@dataclass
class Shop:
    url: str
    data: DemoData
    lethe: Lethe

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url)

    def rows(self, table: str) -> dict[Any, dict[str, Any]]:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                t = metadata.tables[table]
                pk = list(t.primary_key.columns)[0]
                return {r[pk.name]: dict(r) for r in connection.execute(sa.select(t)).mappings()}
        finally:
            engine.dispose()

    def store(self, query: str) -> list[tuple]:
        engine = sa.create_engine(store_url(self.lethe))
        try:
            with engine.connect() as connection:
                return [tuple(r) for r in connection.execute(sa.text(query))]
        finally:
            engine.dispose()

    def due(self, now: str = NOW) -> set[tuple[str, str]]:
        """Due lifecycles, read from the store directly (quicker than `lethe deadlines`)."""
        import pendulum

        from worker.store.schema import StoredLifecycle

        engine = sa.create_engine(store_url(self.lethe))
        query = sa.select(StoredLifecycle.subject, StoredLifecycle.activity).where(
            StoredLifecycle.state == "active", StoredLifecycle.deadline_at <= pendulum.parse(now)
        )
        try:
            with engine.connect() as connection:
                return {tuple(r) for r in connection.execute(query)}
        finally:
            engine.dispose()

    def lifecycles(self) -> dict[tuple[str, str], dict[str, Any]]:
        result = self.lethe.run("deadlines", "--format", "json", "--now", NOW)
        return {(r["subject"], r["activity"]): r for r in json.loads(result.stdout)}

    def audit(self) -> list[dict[str, Any]]:
        return json.loads(self.lethe.run("audit", "--format", "json").stdout)

    def purge(self, *args: str, check: bool = True) -> dict[str, Any]:
        result = self.lethe.run("purge", "--format", "json", *args, check=False)
        if check and result.returncode not in (0, 4):
            raise AssertionError(f"lethe purge failed:\n{result.stdout}\n{result.stderr}")
        summary = json.loads(result.stdout) if result.stdout.strip() else {}
        summary["exit"] = result.returncode
        summary["stderr"] = result.stderr
        return summary

    def purge_approved(self, now: str = NOW) -> dict[str, Any]:
        """A sweep at `now`, approved when it stops (the first on a register always does)."""
        first = self.purge("--now", now)
        if first["exit"] == 4:
            return self.purge("--approve", str(first["run"]))
        return first


def store_url(lethe: Lethe) -> str:
    return (
        lethe.env.get("LETHE_DATABASE_URL") or f"sqlite:///{lethe.home / 'var' / 'lethe.sqlite3'}"
    )


def build_shop(url: str, data: DemoData) -> None:
    engine = sa.create_engine(url)
    try:
        create_schema(engine)
        with engine.begin() as connection:
            for table in metadata.sorted_tables:
                if data.rows.get(table.name):
                    connection.execute(table.insert(), data.rows[table.name])
    finally:
        engine.dispose()


def seed_store(lethe: Lethe, events: list[dict[str, Any]]) -> None:
    """Events straight into the store (the pipeline's own tests cover the broker path)."""
    from worker.domain.register_file import load_register
    from worker.pipeline.ingest import ingest
    from worker.settings import load_settings
    from worker.store.migrate import upgrade
    from worker.store.sessions import make_engine, now_utc

    settings = load_settings(lethe.env)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with sa.orm.Session(engine) as session, session.begin():
            ingest(session, events, load_register(settings.register_path), now_utc())
    finally:
        engine.dispose()


def secret_of(lethe: Lethe) -> bytes:
    from worker.settings import load_settings

    return load_settings(lethe.env).secret


def make_shop(lethe: Lethe, request: pytest.FixtureRequest, people: int, seed: int = 3) -> Shop:
    """The demo shop on SQLite (embedded default) or on its own PostgreSQL database."""
    if lethe.embedded:
        url = f"sqlite:///{lethe.home / 'var' / 'shop.sqlite3'}"
        (lethe.home / "var").mkdir(exist_ok=True)
    else:
        url = request.getfixturevalue("shop_postgres_url")
        lethe.env["LETHE_SHOP_DATABASE_URL"] = url
    data = generate(people=people, seed=seed)
    build_shop(url, data)
    return Shop(url, data, lethe)


def one_row_per_erasure(audit: list[dict[str, Any]]) -> Counter:
    """How many audit rows each (subject, activity, target) has, kept-by-law rows aside."""
    return Counter(
        (r["subject_ref"], r["activity"], r["target"])
        for r in audit
        if r["outcome"] in ("erased", "nothing_to_erase")
    )


def lock_waits(engine: sa.Engine) -> int:
    """Sessions of this database waiting for a lock another transaction holds."""
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    with engine.connect() as connection:
        return connection.execute(sa.text(query)).scalar_one()
