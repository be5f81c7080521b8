"""`lethe backfill`: the shop's existing rows become events through the queue, once, with
their naive DATETIMEs read in the register's zone, and the sweep after waits for a DPO."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from harness import Lethe
from shop_history import (
    fill_ps_orders,
    order,
    register_with_sources,
    shop_url_for,
)
from sweeping import NOW, build_shop, store_url  # noqa: F401 (fixture)

from worker.demo.data import generate

BULK = 2_100  # more than one batch of rows (worker/shop/sources.py BATCH_ROWS)


def _rows() -> list[dict]:
    start = datetime(2018, 1, 1, 9, 0)
    rows = [order(1000 + i, 1 + i % 40, start + timedelta(minutes=i)) for i in range(BULK)]
    rows += [
        order(1, 41, datetime(2026, 3, 29, 2, 30)),  # Paris skipped 02:00-03:00 that night
        order(2, 42, datetime(2026, 10, 25, 2, 30)),  # and lived 02:00-03:00 twice this one
        order(3, 43, None),  # no date: skipped, counted
        order(4, None, datetime(2020, 1, 1)),  # no customer: skipped, counted
        order(5, 44, datetime(2020, 1, 1), valid=0),  # `where: valid = 1` leaves it out
    ]
    return rows


def _stored(lethe: Lethe, event_id: str) -> list[tuple]:
    engine = sa.create_engine(store_url(lethe))
    try:
        with engine.connect() as connection:
            query = sa.text("select occurred_at, subject from events where id = :id")
            return [tuple(r) for r in connection.execute(query, {"id": event_id})]
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_a_backfill_sends_each_row_once_in_the_registers_zone_and_the_sweep_waits(
    embedded: Lethe, request, tmp_path, kind
):
    url = shop_url_for(kind, embedded, request)
    register_with_sources(embedded, tmp_path)
    build_shop(url, generate(people=20, seed=3))  # the targets' tables, for the sweep
    zero = [6] if kind == "mariadb" else []
    fill_ps_orders(url, _rows(), zero_dates=zero)

    check = embedded.run("shop", "check")
    assert "1 sources fit the shop schema" in check.stderr

    dry = embedded.run("backfill", "--dry-run", "--format", "json")
    [report] = json.loads(dry.stdout)
    assert report["rows"] == BULK + 4 + len(zero)
    assert report["events"] == BULK + 2
    assert report["skipped"] == 2 + len(zero)
    assert report["skipped_by"] == {
        "null": 1,
        "null_key": 1,
        **({"zero_date": 1} if zero else {}),
    }
    assert report["earliest"] == "2018-01-01T08:00:00+00:00"  # 09:00 in Paris, winter
    # both nights' 02:30 read as the later instant they can mean: 01:30 UTC
    assert report["latest"] == "2026-10-25T01:30:00+00:00"
    assert embedded.store_count("events") in (0, -1), "a dry run sends nothing"
    [until] = json.loads(
        embedded.run(
            "backfill", "--dry-run", "--source", "1", "--until", "2020-01-01T00:00:00+01:00",
            "--format", "json",
        ).stdout
    )  # fmt: skip
    assert (until["events"], until["after_until"]) == (BULK, 2)
    wrong = embedded.run("backfill", "--dry-run", "--source", "2", check=False)
    assert wrong.returncode == 2 and "there is no source 2: the register has 1" in wrong.stderr

    embedded.run("backfill")
    embedded.start_worker()
    embedded.wait_stored(BULK + 2)
    spring = _stored(embedded, "order-1-closed")
    autumn = _stored(embedded, "order-2-closed")
    assert [str(s[1]) for s in spring] == ["customer:41"]
    assert pd(spring[0][0]) == "2026-03-29T01:30:00"
    assert pd(autumn[0][0]) == "2026-10-25T01:30:00"

    # a second backfill: the same ids, stored once; a marker event says the queue drained
    embedded.run("backfill")
    embedded.run("emit", "contact.made", "--subject", "customer:1", "--id", "marker",
                 "--data", "direction=inbound")  # fmt: skip
    embedded.wait_event("marker")
    embedded.kill_workers()
    assert embedded.store_count("events") == BULK + 2 + 1

    # the shop's old customers are due at once: the sweep stops for a DPO's approval
    result = embedded.run("purge", "--now", NOW, "--format", "json", check=False)
    assert result.returncode == 4, result.stderr
    reasons = json.loads(result.stdout)["reasons"]
    assert any("backfill" in r for r in reasons), reasons


def pd(value: object) -> str:
    """A stored instant as naive UTC ISO text, whichever way the store's driver returns it."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.replace(microsecond=0).isoformat()


def test_backfill_refuses_a_source_the_shop_schema_does_not_have(embedded: Lethe, tmp_path):
    url = shop_url_for("sqlite", embedded, None)
    fill_ps_orders(url, [order(1, 1, datetime(2020, 1, 1))])
    path = register_with_sources(
        embedded,
        tmp_path,
        "sources:\n"
        "  - event: order.closed\n"
        "    table: ps_orders\n"
        '    subject: "customer:{id_client}"\n'
        "    at: date_upd\n"
        '    id: "order-{id_order}"\n'
        "  - event: order.closed\n"
        "    query: SELECT o.id_order, o.date_upd FROM ps_orderz o\n"
        '    subject: "customer:{id_order}"\n'
        "    at: date_upd\n"
        '    id: "q-{id_order}"\n',
    )
    lines = path.read_text().splitlines()
    subject_line = lines.index('    subject: "customer:{id_client}"') + 1
    query_line = lines.index("    query: SELECT o.id_order, o.date_upd FROM ps_orderz o") + 1
    for command in (["shop", "check"], ["backfill", "--dry-run"]):
        result = embedded.run(*command, check=False)
        assert result.returncode == 1, result.stderr
        assert f"{path}:{subject_line}: source 'order.closed' from 'ps_orders': table " in (
            result.stderr
        )
        assert "has no column 'id_client'" in result.stderr
        assert f"{path}:{query_line}: source 'order.closed' from 'query': the shop cannot " in (
            result.stderr
        )
