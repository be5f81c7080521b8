"""`lethe status`: one screen of health for cron or a monitoring probe, whose exit code says
whether a human is needed (0 fine, 1 look at something, 2 a service is down)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import Lethe, wait_for


def _execute(lethe: Lethe, statement: str) -> None:
    engine = sa.create_engine(lethe.env["LETHE_DATABASE_URL"])
    with engine.begin() as connection:
        connection.execute(sa.text(statement))
    engine.dispose()


@pytest.mark.parametrize("lethe", ["distributed", "rabbitmq"], indirect=True)
def test_a_healthy_install_exits_0(lethe: Lethe):
    result = lethe.run("status", check=False)
    assert result.returncode == 0, result.stdout
    assert "OK: the register is being enforced" in result.stdout
    # no queue declared yet (no worker, nothing sent): nothing waits
    assert "answers, 0 message(s) waiting" in result.stdout
    for line in ("broker", "database", "last sweep", "overdue", "dead letters"):
        assert line in result.stdout


def test_overdue_lifecycles_dead_letters_and_a_failed_sweep_need_a_human(distributed: Lethe):
    _execute(
        distributed,
        'INSERT INTO lifecycles (subject, activity, anchor_at, deadline_at, state, "then", '
        "updated_at) VALUES ('customer:1', 'sales', now() - interval '6 years', "
        "now() - interval '1 year', 'active', 'anonymise', now()), "
        "('customer:2', 'sales', now() - interval '5 years', now() - interval '1 hour', "
        "'active', 'anonymise', now())",
    )
    _execute(
        distributed,
        "INSERT INTO dead_letters (received_at, event_id, reason, payload) "
        "VALUES (now(), 'e-1', 'unknown event type', '{}')",
    )
    _execute(
        distributed,
        "INSERT INTO purge_runs (schedule, now_at, started_at, finished_at, status, note) "
        "VALUES ('nightly-sweep', now(), now(), now(), 'failed', 'shop database unreachable')",
    )
    result = distributed.run("status", check=False)
    assert result.returncode == 1, result.stdout
    assert "ATTENTION" in result.stdout
    # only the lifecycle due for more than the grace period is overdue
    assert "1 lifecycle(s) due for more than 2 days" in result.stdout
    assert "1 event(s) refused" in result.stdout and "lethe dead-letters --replay" in result.stdout
    assert "failed" in result.stdout and "shop database unreachable" in result.stdout
    assert "customer:" not in result.stdout
    relaxed = distributed.run("status", "--grace", "2 years", check=False)
    assert "none due for more than 2 years" in relaxed.stdout


def test_a_sweep_waiting_for_approval_names_why_and_the_command_that_approves_it(
    distributed: Lethe,
):
    # as a stopped sweep leaves its run (worker/sweeps/run.py)
    _execute(
        distributed,
        "INSERT INTO purge_runs (id, schedule, now_at, started_at, status, note) VALUES "
        "(41, 'nightly-sweep', now(), now(), 'awaiting_approval', 'waiting for approval: "
        "first sweep on this register. Check with `lethe purge --dry-run`, then run "
        "`lethe purge --approve 41`')",
    )
    result = distributed.run("status", check=False)
    assert result.returncode == 1, result.stdout
    assert "#41 (nightly-sweep) stopped before touching anything" in result.stdout
    assert "because first sweep on this register" in result.stdout
    assert "`lethe purge --approve 41`" in result.stdout


def test_a_broker_or_store_that_is_down_exits_2(distributed: Lethe):
    distributed.env["LETHE_BROKER_URL"] = "redis://127.0.0.1:1/0"
    result = distributed.run("status", check=False)
    assert result.returncode == 2, result.stdout
    assert "cannot reach redis://127.0.0.1:1/0" in result.stdout
    distributed.env["LETHE_DATABASE_URL"] = "postgresql+psycopg://lethe:pw-s3cret@127.0.0.1:1/x"
    result = distributed.run("status", check=False)
    assert result.returncode == 2
    assert "cannot reach postgresql+psycopg://lethe:***@127.0.0.1:1/x" in result.stdout
    assert "pw-s3cret" not in result.stdout


def test_a_long_sweep_whose_worker_still_beats_is_not_reported_stale(distributed: Lethe):
    _execute(
        distributed,
        "INSERT INTO purge_runs (schedule, now_at, started_at, heartbeat_at, status) VALUES "
        "('nightly-sweep', now(), now() - interval '40 minutes', now() - interval '5 seconds', "
        "'running')",
    )
    alive = distributed.run("status", check=False)
    assert alive.returncode == 0, alive.stdout
    _execute(distributed, "UPDATE purge_runs SET heartbeat_at = now() - interval '35 minutes'")
    silent = distributed.run("status", check=False)
    assert silent.returncode == 1 and "check its worker is alive" in silent.stdout


def test_events_arriving_for_days_with_no_sweep_ask_whether_beat_runs(distributed: Lethe):
    assert distributed.run("status", check=False).returncode == 0  # a new install
    _execute(
        distributed,
        "INSERT INTO events (id, type, subject, occurred_at, data, received_at) VALUES "
        "('e-old', 'contact.made', 'customer:1', now() - interval '4 days', '{}', "
        "now() - interval '3 days')",
    )
    result = distributed.run("status", check=False)
    assert result.returncode == 1, result.stdout
    assert "none recorded, though events arrive since" in result.stdout
    assert "is beat running" in result.stdout


def test_the_embedded_broker_keeps_its_files_under_lethe_home(embedded: Lethe):
    embedded.start_worker()  # started in LETHE_HOME, its current directory
    embedded.run("emit", "contact.made", "--direction", "inbound", "--subject", "customer:1")
    embedded.wait_stored(1)
    assert not (embedded.home / "control").exists()
    assert (embedded.home / "var" / "broker" / "control").is_dir()


def test_status_answers_while_a_writer_holds_the_embedded_store(embedded: Lethe):
    # As a sweep's batch or a long ingest holds SQLite's write lock; the busy
    # timeout is 60 s, so a status that waited for the lock would time out here.
    import sqlite3

    embedded.run("deadlines")  # makes the store, as the worker does
    writer = sqlite3.connect(Path(embedded.env["LETHE_HOME"]) / "lethe.sqlite3")
    writer.isolation_level = None
    writer.execute("BEGIN IMMEDIATE")
    try:
        result = embedded.run("status", check=False, timeout=30)
    finally:
        writer.rollback()
        writer.close()
    assert re.search(r"database +OK .* answers, schema up to date", result.stdout), result.stdout
    assert re.search(r"last sweep +OK", result.stdout), result.stdout


def test_a_sweep_approved_hours_after_it_stopped_is_timed_from_its_approval(
    distributed: Lethe,
):
    _execute(
        distributed,
        "INSERT INTO purge_runs (schedule, now_at, started_at, approved_at, finished_at, status, "
        "due, erased) VALUES ('nightly-sweep', now(), now() - interval '5 hours', "
        "now() - interval '12 seconds', now(), 'done', 3, 3)",
    )
    result = distributed.run("status", check=False)
    assert re.search(r"last sweep +OK .* in 12\.\d s", result.stdout), result.stdout


def test_status_reports_an_embedded_store_left_behind_and_leaves_it_as_it_is(embedded: Lethe):
    # a probe must not migrate: an older `lethe worker` may still run on that store
    from alembic import command

    from worker.store.migrate import alembic_config, current_revision, head_revision

    embedded.run("deadlines")  # makes the store, as the worker does
    url = f"sqlite:///{Path(embedded.env['LETHE_HOME']) / 'lethe.sqlite3'}"
    command.downgrade(alembic_config(url), "0004")
    result = embedded.run("status", check=False)
    head = head_revision(url)
    assert re.search(
        rf"database +ATTENTION .*schema is at 0004, this code needs {head}: the next "
        r"`lethe worker` migrates it",
        result.stdout,
    ), result.stdout
    assert current_revision(url) == "0004"
    upgraded = embedded.run("db", "upgrade")
    assert f"store schema upgraded from 0004 to {head}" in upgraded.stderr
    again = embedded.run("db", "upgrade")
    assert f"store schema is up to date ({head}): nothing to do" in again.stderr


def test_a_large_store_without_statistics_needs_a_human(distributed: Lethe):
    # This test server runs PostgreSQL with autovacuum off, as some installs do: nothing
    # analyses the store, and its lookups turn into whole-table scans as it grows.
    _execute(
        distributed,
        "INSERT INTO events (id, type, subject, occurred_at, data, received_at) "
        "SELECT 'e-' || i, 'visit.recorded', 'visitor:v-' || (i % 5000), now(), '{}', now() "
        "FROM generate_series(1, 120000) i",
    )

    def statistics_line() -> str:
        out = distributed.run("status", check=False).stdout
        return next((line for line in out.splitlines() if "statistics" in line), "")

    # the server's counters reach pg_stat_user_tables within a second or so
    wait_for(lambda: "ATTENTION" in statistics_line(), 30, "the statistics check to alert")
    line = statistics_line()
    assert "events (120,000 rows)" in line and "ANALYZE" in line
    assert distributed.run("status", check=False).returncode == 1

    _execute(distributed, "ANALYZE events")
    wait_for(lambda: "OK" in statistics_line(), 30, "the statistics check to clear")
