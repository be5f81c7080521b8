"""Ingestion reads each subject's event summary, not its whole log: the stored lifecycles
are still exactly what `lethe simulate` gives from the same events, on PostgreSQL and
SQLite, whatever the order, the duplicates and the batches, with long histories, and on
a store filled before the summary existed (migration 0010)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from worker.domain.register_file import default_register_path, load_register
from worker.pipeline.ingest import ingest
from worker.pipeline.queries import deadline_rows, recompute_lifecycles
from worker.store.migrate import upgrade
from worker.store.sessions import transaction

REPO = Path(__file__).resolve().parents[2]
NOW = "2026-11-26T00:00:00+01:00"
REGISTER = load_register(default_register_path())


def _types(kind: str) -> list[str]:
    types = {t for a in REGISTER.activities if kind in a.subjects for t in a.event_types}
    return sorted(types | set(REGISTER.holds.place) | set(REGISTER.holds.lift))


def shop_events(seed: int) -> list[dict]:
    """Long histories: a visitor with 600 visits, customers with hundreds of orders over
    three distributors, candidates refused with and without consent, disputes by case."""
    rng = random.Random(seed)
    start = datetime(2017, 1, 1, tzinfo=UTC)
    events = []
    subjects = [("visitor", 1, 600), ("customer", 1, 300), ("customer", 2, 40)]
    subjects += [("candidate", n, 30) for n in range(1, 4)] + [("prospect", 1, 50)]
    for kind, number, count in subjects:
        types = _types(kind)
        for n in range(count):
            event_type = "visit.recorded" if kind == "visitor" and n % 3 else rng.choice(types)
            data: dict = {}
            if event_type == "order.closed" and rng.random() < 0.7:
                data["distributor"] = rng.choice(["DIST-NORD", "DIST-SUD", "DIST-AUTRE"])
            if event_type == "candidate.rejected" and rng.random() < 0.6:
                data["keep"] = rng.random() < 0.5
            if event_type == "contact.made":
                data["direction"] = rng.choice(["inbound", "outbound"])
            if REGISTER.is_hold_event(event_type) and rng.random() < 0.8:
                data["case"] = rng.choice(["A", "B", 3])
            moment = start + timedelta(minutes=rng.randrange(0, 10 * 365 * 24 * 60, 30))
            events.append(
                {
                    "id": f"{kind}-{number}-{n}",
                    "type": event_type,
                    "subject": f"{kind}:{number}",
                    "occurred_at": moment.isoformat(),
                    "data": data,
                }
            )
    return events


def simulated(tmp_path: Path, events: list[dict]) -> list[dict]:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    lethe = str(Path(sys.executable).parent / "lethe")
    done = subprocess.run(
        [lethe, "simulate", str(path), "--now", NOW],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def stored(url: str) -> list[dict]:
    import pendulum

    return deadline_rows(url, REGISTER, pendulum.parse(NOW))


def ingest_in_batches(url: str, events: list[dict], seed: int) -> None:
    rng = random.Random(seed)
    sent = events + rng.sample(events, 60)  # redelivered
    rng.shuffle(sent)
    at = 0
    while at < len(sent):
        size = rng.choice([1, 2, 7, 50, 200])
        with transaction(url) as session:
            ingest(session, sent[at : at + size], REGISTER, _now())
        at += size


def _now():
    import pendulum

    return pendulum.parse(NOW)


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")


def test_lifecycles_from_the_summary_are_those_lethe_simulate_gives(store_url, tmp_path):
    events = shop_events(seed=16)
    upgrade(store_url)
    ingest_in_batches(store_url, events, seed=1)
    assert stored(store_url) == simulated(tmp_path, events)
    engine = sa.create_engine(store_url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT subject, count(*) FROM event_summary GROUP BY subject")
        ).all()
    engine.dispose()
    # bounded: per type its latest and its earliest event, and per dispute case (A, B, 3,
    # none) for the two dispute types: visitor:1's 600 events are a score of rows
    assert dict(rows)["visitor:1"] <= 2 * len(_types("visitor")) + 2 * 3
    assert max(count for _, count in rows) <= 40  # an earliest row per type too


def test_a_store_filled_before_the_summary_is_rebuilt_from_its_log(store_url, tmp_path):
    """Migration 0010 marks every subject's summary stale; its next event rebuilds it
    from the log, and `lethe recompute` rebuilds them all."""
    from alembic import command

    from worker.store.migrate import alembic_config

    events = shop_events(seed=7)
    # shuffled, so every subject has events in each part
    random.Random(4).shuffle(events)
    old, mid, tail = events[:600], events[600:900], events[900:]
    command.upgrade(alembic_config(store_url), "0009")
    ingest_old_release(store_url, old)
    # and the lifecycles that release had stored from them: the first new event of a
    # subject recomputes only the activities it touches
    store_old_lifecycles(store_url, simulated(tmp_path, old))
    upgrade(store_url)
    assert stale_rows(store_url) == 7  # one marker per subject with a log
    ingest_in_batches(store_url, mid, seed=2)
    assert stored(store_url) == simulated(tmp_path, old + mid)
    recompute_lifecycles(store_url, REGISTER, apply=True)
    assert stale_rows(store_url) == 0
    ingest_in_batches(store_url, tail, seed=3)
    assert stored(store_url) == simulated(tmp_path, events)


def stale_rows(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        found = connection.scalar(sa.text("SELECT count(*) FROM event_summary WHERE spec = ''"))
    engine.dispose()
    return found


def ingest_old_release(url: str, events: list[dict]) -> None:
    """The log as the release before the summary wrote it: events only (the lifecycles
    are recomputed from the whole log by the first event of each subject)."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (id, type, subject, occurred_at, data, received_at) "
                "VALUES (:id, :type, :subject, :occurred_at, :data, :received_at)"
            ),
            [
                {
                    **{k: e[k] for k in ("id", "type", "subject")},
                    "occurred_at": datetime.fromisoformat(e["occurred_at"]).replace(tzinfo=None)
                    if url.startswith("sqlite")
                    else e["occurred_at"],
                    "data": json.dumps(e["data"]),
                    "received_at": "2026-11-01T00:00:00",
                }
                for e in events
            ],
        )
    engine.dispose()


def store_old_lifecycles(url: str, rows: list[dict]) -> None:
    """Lifecycles as the release before the summary stored them (`due` is stored active)."""
    engine = sa.create_engine(url)

    def moment(text: str | None):
        if text is None:
            return None
        at = datetime.fromisoformat(text).astimezone(UTC)
        return at.replace(tzinfo=None) if url.startswith("sqlite") else at

    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state, "
                '"then", updated_at) VALUES (:subject, :activity, :anchor_at, :deadline_at, '
                ":state, :then, :updated_at)"
            ),
            [
                {
                    "subject": r["subject"],
                    "activity": r["activity"],
                    "anchor_at": moment(r["anchor_at"]),
                    "deadline_at": moment(r["deadline_at"]),
                    "state": "active" if r["state"] == "due" else r["state"],
                    "then": r["then"],
                    "updated_at": moment("2026-11-01T00:00:00+00:00"),
                }
                for r in rows
            ],
        )
    engine.dispose()
