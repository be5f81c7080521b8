"""The demo shop's schema: the tables the shipped register's targets point at.

A plausible French online shop: customers and their accounts, orders, invoices,
newsletter subscribers, prospects, candidates, ambassadors, distributors'
customers and navigation logs. `lethe demo`, the integration tests and the
sweep benchmark build it; a real shop has its own schema and its own targets.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("first_name", sa.String(100), nullable=False),
    sa.Column("last_name", sa.String(100), nullable=False),
    sa.Column("phone", sa.String(30)),
    sa.Column("birth_date", sa.Date),
    sa.Column("street", sa.String(200)),
    sa.Column("postcode", sa.String(10)),
    sa.Column("city", sa.String(100)),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), primary_key=True),
    sa.Column("login", sa.String(254), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("last_login_at", sa.DateTime),
    sa.Column("last_ip", sa.String(45)),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False, index=True),
    sa.Column("number", sa.String(20), nullable=False, unique=True),
    sa.Column("placed_at", sa.DateTime, nullable=False),
    sa.Column("ship_name", sa.String(200), nullable=False),
    sa.Column("ship_street", sa.String(200), nullable=False),
    sa.Column("ship_postcode", sa.String(10), nullable=False),
    sa.Column("ship_city", sa.String(100), nullable=False),
    sa.Column("total", sa.Numeric(10, 2), nullable=False),
    sa.Column("gift_message", sa.Text),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("number", sa.String(20), nullable=False, unique=True),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), index=True),
    sa.Column("ambassador_ref", sa.String(20), index=True),
    sa.Column("issued_at", sa.Date, nullable=False),
    sa.Column("billing_name", sa.String(200), nullable=False),
    sa.Column("billing_street", sa.String(200), nullable=False),
    sa.Column("billing_postcode", sa.String(10), nullable=False),
    sa.Column("billing_city", sa.String(100), nullable=False),
    sa.Column("customer_email", sa.String(254)),
    sa.Column("customer_phone", sa.String(30)),
    sa.Column("amount_excl_tax", sa.Numeric(10, 2), nullable=False),
    sa.Column("vat", sa.Numeric(10, 2), nullable=False),
    sa.Column("amount_incl_tax", sa.Numeric(10, 2), nullable=False),
)

prospects = sa.Table(
    "prospects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ref", sa.String(20), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(254)),
    sa.Column("phone", sa.String(30)),
    sa.Column("company", sa.String(200)),
    sa.Column("postcode", sa.String(10)),
    sa.Column("message", sa.Text),
    sa.Column("contacted_at", sa.DateTime, nullable=False),
)

newsletter_subscribers = sa.Table(
    "newsletter_subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("subject", sa.String(200), nullable=False, unique=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("first_name", sa.String(100)),
    sa.Column("subscribed_at", sa.DateTime, nullable=False),
)

candidates = sa.Table(
    "candidates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ref", sa.String(20), nullable=False, unique=True),
    sa.Column("first_name", sa.String(100), nullable=False),
    sa.Column("last_name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("phone", sa.String(30)),
    sa.Column("city", sa.String(100)),
    sa.Column("cv", sa.Text),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)

ambassadors = sa.Table(
    "ambassadors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ref", sa.String(20), nullable=False, unique=True),
    sa.Column("display_name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("instagram", sa.String(100), unique=True),
    sa.Column("iban", sa.String(34)),
    sa.Column("street", sa.String(200)),
    sa.Column("postcode", sa.String(10)),
    sa.Column("city", sa.String(100)),
    sa.Column("fee", sa.Numeric(10, 2)),
    sa.Column("contract_ended_at", sa.Date),
)

distributor_orders = sa.Table(
    "distributor_orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_ref", sa.String(50), nullable=False, index=True),
    sa.Column("distributor", sa.String(20), nullable=False),
    sa.Column("number", sa.String(20), nullable=False, unique=True),
    sa.Column("placed_at", sa.DateTime, nullable=False),
    sa.Column("customer_name", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(30)),
    sa.Column("street", sa.String(200), nullable=False),
    sa.Column("postcode", sa.String(10), nullable=False),
    sa.Column("city", sa.String(100), nullable=False),
    sa.Column("total", sa.Numeric(10, 2), nullable=False),
)

navigation_logs = sa.Table(
    "navigation_logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("subject", sa.String(200), nullable=False, index=True),
    sa.Column("visited_at", sa.DateTime, nullable=False),
    sa.Column("ip", sa.String(45)),
    sa.Column("user_agent", sa.String(300)),
    sa.Column("path", sa.String(300), nullable=False),
)


def create_schema(engine: sa.Engine) -> None:
    """Make the demo shop's tables (dropping any earlier demo tables first)."""
    metadata.drop_all(engine)
    metadata.create_all(engine)


def build_shop(url: str, rows: dict[str, list[dict]]) -> None:
    """A demo shop database at `url` holding `rows` (table name -> rows), made afresh."""
    engine = sa.create_engine(url)
    try:
        create_schema(engine)
        with engine.begin() as connection:
            for table in metadata.sorted_tables:
                if rows.get(table.name):
                    connection.execute(table.insert(), rows[table.name])
    finally:
        engine.dispose()
