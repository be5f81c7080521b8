"""The outbox's contract without a service: the DDL of each shop database names the
design's columns, and beat's relay entry follows LETHE_OUTBOX_EVERY, keeps no URL in
beat's schedule file, and stays off while the shop database has no outbox."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest

from schedules.beat import OUTBOX_LOOK_AGAIN, OUTBOX_TASK, OutboxSchedule, outbox_entry
from worker.settings import SettingsError, load_settings
from worker.shop.outbox import OutboxUnavailable, ddl

URLS = {
    "postgresql": "postgresql+psycopg://shop:secret@db/shop",
    "mysql": "mysql+pymysql://shop:secret@db/shop",
    "mariadb": "mariadb+pymysql://shop:secret@db/shop",
    "sqlite": "sqlite:////tmp/shop.sqlite3",
}


@pytest.mark.parametrize("name", sorted(URLS))
def test_the_ddl_has_the_designs_columns(name: str):
    table = ddl(URLS[name])[0]
    for column in (
        "id VARCHAR(200)",
        "type VARCHAR(100) NOT NULL",
        "subject VARCHAR(200) NOT NULL",
        "occurred_at VARCHAR(40) NOT NULL",
        "data TEXT NULL",
        "TEXT NULL",
        "created_at TIMESTAMP",
    ):
        assert column in table, (name, column)
    assert "PRIMARY KEY" in table and "match" in table
    if name in ("mysql", "mariadb"):
        # MATCH is reserved there, and the insert must share the shop's transaction
        assert "`match` TEXT NULL" in table and "ENGINE=InnoDB" in table


def test_another_database_is_refused_with_the_ones_supported():
    with pytest.raises(OutboxUnavailable, match="PostgreSQL, MariaDB/MySQL and SQLite"):
        ddl("oracle+oracledb://shop:secret@db/shop")


def test_beats_relay_entry_follows_the_setting_and_keeps_no_url(tmp_path):
    settings = load_settings({"LETHE_HOME": str(tmp_path), "LETHE_OUTBOX_EVERY": "5"})
    entry = outbox_entry(settings)
    assert entry["task"] == OUTBOX_TASK
    assert entry["schedule"].run_every == timedelta(seconds=5)
    assert b"secret" not in pickle.dumps(entry["schedule"])
    assert load_settings({"LETHE_HOME": str(tmp_path)}).outbox_every == 2.0
    with pytest.raises(SettingsError, match="LETHE_OUTBOX_EVERY"):
        load_settings({"LETHE_HOME": str(tmp_path), "LETHE_OUTBOX_EVERY": "0"})


def test_the_relay_is_off_while_the_shop_has_no_outbox(tmp_path, monkeypatch):
    # an embedded home whose shop database does not exist: no outbox, and none created
    monkeypatch.setenv("LETHE_HOME", str(tmp_path))
    from worker.settings import current_settings

    current_settings.cache_clear()
    try:
        schedule = OutboxSchedule(timedelta(seconds=2))
        due, wait = schedule.is_due(datetime.now(UTC) - timedelta(minutes=1))
        assert (due, wait) == (False, OUTBOX_LOOK_AGAIN)
        assert not (tmp_path / "shop.sqlite3").exists()
    finally:
        current_settings.cache_clear()
