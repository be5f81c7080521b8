"""The store as ops meet it: migrations, a worker on an old schema, the redelivery cap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import CELERY, REDIS_URL, Lethe, wait_for

from worker.pipeline.delivery import MAX_DELIVERIES
from worker.store.migrate import upgrade


def test_a_worker_refuses_to_start_on_a_store_that_was_not_migrated(
    tmp_path: Path, postgres_url: str, redis_prefix: str
):
    env = {
        **os.environ,
        "LETHE_BROKER_URL": REDIS_URL,
        "LETHE_DATABASE_URL": postgres_url,
        "LETHE_SECRET": "a-secret-long-enough-for-tests",
        "LETHE_QUEUE_PREFIX": redis_prefix,
    }
    result = subprocess.run(
        [CELERY, "-A", "worker.app", "worker", "--loglevel=INFO"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "run `lethe db upgrade` first" in result.stderr + result.stdout


def test_db_upgrade_is_idempotent_and_deadlines_filter(embedded: Lethe, samples: Path):
    embedded.run("db", "upgrade")
    embedded.run("db", "upgrade")
    embedded.start_worker()
    embedded.run("emit", "--file", str(samples))
    embedded.wait_stored(28)
    wait_for(lambda: len(embedded.deadlines()) == 29, 30, "lifecycles", embedded.logs)
    due = embedded.run(
        "deadlines", "--due-before", "2025-03-01T00:00:00+01:00", "--format", "json"
    ).stdout
    rows = json.loads(due)
    assert {(r["subject"], r["activity"]) for r in rows} == {
        ("customer:42", "sales"),
        ("customer:42", "newsletter"),
    }
    one = embedded.run("deadlines", "--subject", "customer:43").stdout.splitlines()
    assert one[0].split() == ["subject", "activity", "anchor_at", "deadline_at", "state", "then"]
    assert len(one) == 4 and all(line.split()[4] == "held" for line in one[1:])


def test_a_batch_whose_worker_dies_each_time_is_set_aside_at_its_5th_delivery(
    distributed: Lethe,
):
    # Each worker takes the batch and is killed while its ingestion waits on a lock
    # the test holds on the events table; Redis gives the batch back after the
    # visibility timeout (5 s here) to the next worker, flagged as redelivered.
    lethe = distributed
    events = [
        {
            "id": f"poison-{n}",
            "type": "order.closed",
            "subject": f"customer:{n}",
            "occurred_at": "2025-05-05T10:00:00+02:00",
        }
        for n in range(3)
    ]
    store = sa.create_engine(lethe.env["LETHE_DATABASE_URL"])
    blocker = store.connect()
    blocking = blocker.begin()
    blocker.execute(sa.text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))

    def waiting_since(moment) -> int:
        """Sessions opened after `moment` that wait for a lock (the killed workers' own
        sessions may go on waiting: they are older)."""
        with store.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND backend_start > :moment"
                ),
                {"moment": moment},
            ).scalar_one()

    def database_now():
        with store.connect() as connection:
            return connection.execute(sa.text("SELECT clock_timestamp()")).scalar_one()

    try:
        lethe.python(
            f"from worker.app import app\napp.send_task('lethe.ingest', args=[{events!r}])"
        )
        for delivery in range(1, MAX_DELIVERIES):
            started = database_now()
            lethe.start_worker()
            wait_for(
                lambda started=started: waiting_since(started) > 0,
                60,
                f"delivery {delivery} to wait on the lock",
                lethe.logs,
            )
            assert lethe.store_count("dead_letters") == 0, f"set aside at delivery {delivery}"
            lethe.kill_workers(signal.SIGKILL)
        started = database_now()
        lethe.start_worker()
        wait_for(
            lambda: lethe.store_count("dead_letters") == len(events),
            60,
            f"the batch set aside at delivery {MAX_DELIVERIES}",
            lethe.logs,
        )
        assert waiting_since(started) == 0  # set aside before any ingestion
    finally:
        blocking.rollback()
        blocker.close()
    letters = json.loads(lethe.run("dead-letters", "--format", "json").stdout)
    assert sorted(x["event_id"] for x in letters) == [e["id"] for e in events]
    assert all("delivered 5 times and never acknowledged" in x["reason"] for x in letters)
    assert lethe.store_count("events") == 0
    # kept whole: a replay stores them
    assert "replayed 3, still refused 0" in lethe.run("dead-letters", "--replay").stderr
    assert lethe.store_count("events") == len(events)
    store.dispose()


def test_an_erased_lifecycle_stays_erased_unless_a_later_event_reopens_it(postgres_url: str):
    from worker.domain.register_file import default_register_path, load_register
    from worker.pipeline.ingest import ingest
    from worker.store.sessions import now_utc, transaction

    upgrade(postgres_url)
    register = load_register(default_register_path())

    def send(event_id: str, when: str) -> None:
        event = {
            "id": event_id,
            "type": "order.closed",
            "subject": "customer:7",
            "occurred_at": when,
        }
        with transaction(postgres_url) as session:
            ingest(session, [event], register, now_utc())

    def sales() -> tuple[str, str]:
        with sa.create_engine(postgres_url).connect() as connection:
            row = connection.execute(
                sa.text(
                    "select state, deadline_at from lifecycles "
                    "where subject = 'customer:7' and activity = 'sales'"
                )
            ).one()
        return row.state, row.deadline_at.isoformat()

    send("o-1", "2019-05-01T10:00:00+02:00")
    with sa.create_engine(postgres_url).begin() as connection:
        connection.execute(sa.text("update lifecycles set state = 'erased'"))
    send("o-0", "2018-01-01T10:00:00+01:00")  # late, older than what was erased
    assert sales() == ("erased", "2024-05-01T08:00:00+00:00")
    send("o-2", "2025-06-01T10:00:00+02:00")  # the customer came back
    assert sales() == ("active", "2030-06-01T08:00:00+00:00")


def test_a_store_erased_by_the_previous_release_gives_later_contacts_a_deadline(
    postgres_url: str,
):
    """Lifecycles erased before `erased_at` existed (migration 0005): a contact after
    that erasure is new data with a deadline, not kept without one for good."""
    from alembic import command

    from worker.domain.register_file import default_register_path, load_register
    from worker.pipeline.ingest import ingest
    from worker.store.migrate import alembic_config
    from worker.store.sessions import now_utc, transaction

    command.upgrade(alembic_config(postgres_url), "0004")
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO events (id, type, subject, occurred_at, data, received_at) VALUES "
                "('o-1', 'order.closed', 'customer:7', '2019-05-01T08:00Z', '{}', now()), "
                "('ask', 'erasure.requested', 'customer:7', '2026-11-20T09:00Z', '{}', now())"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state, "
                "\"then\", updated_at) VALUES ('customer:7', 'crm.customers', "
                "'2026-11-20T09:00Z', '2026-11-20T09:00Z', 'erased', 'anonymise', now())"
            )
        )
    upgrade(postgres_url)
    contact = {
        "id": "c-1",
        "type": "contact.made",
        "subject": "customer:7",
        "occurred_at": "2026-11-25T10:00:00+01:00",
        "data": {"direction": "inbound"},
    }
    with transaction(postgres_url) as session:
        ingest(session, [contact], load_register(default_register_path()), now_utc())
    with engine.connect() as connection:
        row = connection.execute(
            sa.text(
                "SELECT state, deadline_at FROM lifecycles "
                "WHERE subject = 'customer:7' AND activity = 'crm.customers'"
            )
        ).one()
    engine.dispose()
    assert (row.state, row.deadline_at.isoformat()) == ("active", "2031-11-25T09:00:00+00:00")


def _is_suppressed_error(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess:
    """What the shop's own code prints when `is_suppressed` raises StoreUnavailable (the
    documented "cannot tell: do not write"), run in a process of its own as the shop's."""
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(LETHE_HOME=str(tmp_path), **settings)
    code = (
        "from worker.client import StoreUnavailable, is_suppressed\n"
        "try:\n"
        "    is_suppressed('jean.dupont@example.com')\n"
        "except StoreUnavailable as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result


def test_is_suppressed_on_a_store_not_migrated_raises_the_documented_error(
    postgres_url: str, tmp_path: Path
):
    # the shop catches StoreUnavailable ("cannot tell: do not write"); a RuntimeError of
    # the migration code would crash its mailing instead
    result = _is_suppressed_error(tmp_path, LETHE_DATABASE_URL=postgres_url, LETHE_SECRET="s" * 32)
    assert "cannot read the suppression list" in result.stdout
    assert "run `lethe db upgrade` first" in result.stdout


def test_is_suppressed_with_the_store_down_raises_the_documented_error(tmp_path: Path) -> None:
    result = _is_suppressed_error(
        tmp_path, LETHE_DATABASE_URL="postgresql+psycopg://lethe:pw@127.0.0.1:1/store"
    )
    assert "cannot read the suppression list in postgresql+psycopg://lethe:***@" in result.stdout
    assert "jean.dupont" not in result.stdout + result.stderr


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_disputes_opened_after_an_erasure_keep_their_case_ids_only(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
):
    # Overlapping disputes are told apart by their case; stripped as erased payloads,
    # closing one looked like closing all, and forgetting took a person still disputed.
    # Anything else beside the case (a claimant's name) goes as other payloads do.
    postgres_url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'store.sqlite3'}"
    )
    from worker.domain.register_file import default_register_path, load_register
    from worker.domain.retention import is_held
    from worker.pipeline.ingest import ingest
    from worker.store.reads import events_of
    from worker.store.schema import UTCDateTime
    from worker.store.sessions import now_utc, transaction

    upgrade(postgres_url)
    register = load_register(default_register_path())

    def send(*events: dict) -> None:
        with transaction(postgres_url) as session:
            ingest(session, list(events), register, now_utc())

    def event(event_id: str, event_type: str, at: str, **data: str) -> dict:
        return {
            "id": event_id,
            "type": event_type,
            "subject": "customer:9",
            "occurred_at": at,
            "data": data,
        }

    send(event("o-1", "order.closed", "2019-05-01T10:00:00+02:00"))
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        erased = sa.text("UPDATE lifecycles SET state = 'erased', erased_at = :at")
        connection.execute(
            erased.bindparams(sa.bindparam("at", type_=UTCDateTime())), {"at": now_utc()}
        )
    send(
        event("d-a", "dispute.opened", "2026-11-20T10:00:00+01:00", case="A", note="J. Martin"),
        event("d-b", "dispute.opened", "2026-11-21T10:00:00+01:00", case="B"),
        event("d-a-end", "dispute.closed", "2026-11-22T10:00:00+01:00", case="A"),
    )
    with transaction(postgres_url) as session:
        stored = events_of(session, ["customer:9"])["customer:9"]
    engine.dispose()
    assert {e.id: e.data for e in stored if e.type.startswith("dispute")} == {
        "d-a": {"case": "A"},
        "d-b": {"case": "B"},
        "d-a-end": {"case": "A"},
    }
    assert is_held(stored, register)  # B is still open


def test_the_suppression_list_keeps_an_opposition_until_an_erasure_after_it(postgres_url: str):
    from datetime import UTC, datetime, timedelta

    from worker.store.schema import Suppression
    from worker.store.sessions import transaction
    from worker.store.suppression import Entry, drop_expired, in_force, record

    upgrade(postgres_url)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    years = [datetime(y, 1, 1, tzinfo=UTC) for y in range(2019, 2023)]
    with transaction(postgres_url) as session:
        # erased in 2019, then subscribed again and opposed again, the new row held since
        record(session, {"h:held": Entry("newsletter", years[2], years[1], years[0])}, now)
        # opposed, and that row erased after it
        record(session, {"h:gone": Entry("newsletter", years[2], None, years[3])}, now)
        # a subscription dated 2099 must not lift every opposition until then
        future = datetime(2099, 1, 1, tzinfo=UTC)
        record(session, {"h:future": Entry("newsletter", None, future)}, years[3])
        record(session, {"h:future": Entry("newsletter", years[3] + timedelta(days=1))}, now)
    with transaction(postgres_url) as session:
        drop_expired(session, now)
    with transaction(postgres_url) as session:
        kept = {row.value_hash: row for row in session.query(Suppression)}
    assert set(kept) == {"h:held", "h:future"}
    assert in_force(kept["h:future"].opposed_at, kept["h:future"].subscribed_at)
