"""What the shop-history tests share: a shop on SQLite, PostgreSQL or MariaDB holding the
demo tables beside a PrestaShop-style `ps_orders`, and a register whose sources read it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import Lethe, copy_register

ps = sa.MetaData()
ps_orders = sa.Table(
    "ps_orders",
    ps,
    sa.Column("id_order", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("id_customer", sa.Integer, nullable=True),
    sa.Column("id_shop", sa.Integer, nullable=False),
    sa.Column("date_upd", sa.DateTime, nullable=True),  # naive, as PrestaShop's DATETIME
    sa.Column("valid", sa.Integer, nullable=False),
)

PS_SOURCE = """sources:
  - event: order.closed
    table: ps_orders
    subject: "customer:{id_customer}"
    at: date_upd
    id: "order-{id_order}-closed"
    where: "valid = 1"
    data: {shop: "{id_shop}"}
"""


def shop_url_for(kind: str, lethe: Lethe, request: pytest.FixtureRequest) -> str:
    """The shop's database URL on `kind` (sqlite, postgresql, mariadb), empty, made for the test."""
    if kind == "sqlite":
        (lethe.home / "var").mkdir(exist_ok=True)
        url = f"sqlite:///{lethe.home / 'var' / 'shop.sqlite3'}"
    elif kind == "postgresql":
        url = request.getfixturevalue("shop_postgres_url")
    else:
        url = request.getfixturevalue("mariadb_url")
    lethe.env["LETHE_SHOP_DATABASE_URL"] = url
    return url


def register_with_sources(lethe: Lethe, tmp_path: Path, sources: str = PS_SOURCE) -> Path:
    """The shipped register with its `sources:` replaced by `sources`."""
    path = copy_register(tmp_path)
    text = path.read_text()
    head, rest = text.split("\n# Where the shop's existing rows", 1)
    activities = rest[rest.index("\nactivities:\n") :]
    path.write_text(head + "\n" + sources + activities)
    lethe.env["LETHE_REGISTER"] = str(path)
    return path


def fill_ps_orders(url: str, rows: list[dict], zero_dates: list[int] = ()) -> None:
    """`ps_orders` made afresh with `rows`; on MariaDB, `zero_dates` rows get 0000-00-00."""
    engine = sa.create_engine(url)
    try:
        ps.drop_all(engine)
        ps.create_all(engine)
        with engine.begin() as connection:
            connection.execute(ps_orders.insert(), rows)
            if zero_dates:
                # what an old MySQL shop holds where it had no date (NO_ZERO_DATE off)
                connection.execute(sa.text("SET SESSION sql_mode = ''"))
                for id_order in zero_dates:
                    connection.execute(
                        sa.text(
                            "INSERT INTO ps_orders VALUES (:id, 600, 1, '0000-00-00 00:00:00', 1)"
                        ),
                        {"id": id_order},
                    )
    finally:
        engine.dispose()


def order(id_order: int, customer: int | None, at: datetime | None, valid: int = 1) -> dict:
    return {
        "id_order": id_order,
        "id_customer": customer,
        "id_shop": 1,
        "date_upd": at,
        "valid": valid,
    }
