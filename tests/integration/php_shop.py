"""A shop in the PHP style (PrestaShop's tables, as its installer writes them) on MariaDB,
its register, and the events its life sends: what the MariaDB tests share.

What makes it PHP-shaped, and what Lethe must take as it is: table names with a prefix
(`ps_`), no foreign key anywhere (the ORM keeps the links), NOT NULL columns that
default to '' instead of NULL, naive DATETIMEs on the shop's wall clock, zero dates
(`0000-00-00 00:00:00`, PrestaShop's "not invoiced yet"), an address table that orders
and customers share, UNIQUE on one personal column (the e-mail), a column-level CHECK.

The customers' rule says `then: pseudonymise`: the e-mail becomes a keyed hash and the
first name a pseudonym, which whoever holds LETHE_SECRET links back to the person (the
register check refuses both under `then: anonymise`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from harness import Lethe

# Far enough after the data that the old customers are due (3 years after their last order).
NOW = "2026-11-26T03:00:00+01:00"
LATER = "2026-11-27T03:00:00+01:00"  # the next night: a sweep may not run ahead of the clock
ZERO = "0000-00-00 00:00:00"

SCHEMA = [
    """CREATE TABLE `ps_customer` (
      `id_customer` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
      `id_gender` INT(10) UNSIGNED NOT NULL DEFAULT 0,
      `firstname` VARCHAR(255) NOT NULL DEFAULT '',
      `lastname` VARCHAR(255) NOT NULL DEFAULT '',
      `email` VARCHAR(255) NOT NULL DEFAULT '' CHECK (`email` <> 'admin'),
      `passwd` VARCHAR(255) NOT NULL DEFAULT '',
      `birthday` DATE DEFAULT NULL,
      `newsletter` TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
      `ip_registration_newsletter` VARCHAR(15) DEFAULT NULL,
      `note` TEXT,
      `active` TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
      `date_add` DATETIME NOT NULL,
      `date_upd` DATETIME NOT NULL,
      PRIMARY KEY (`id_customer`),
      UNIQUE KEY `customer_email` (`email`),
      CONSTRAINT `lastname_given` CHECK (`lastname` <> '')
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `ps_address` (
      `id_address` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
      `id_customer` INT(10) UNSIGNED NOT NULL DEFAULT 0,
      `alias` VARCHAR(32) NOT NULL DEFAULT '',
      `company` VARCHAR(255) NOT NULL DEFAULT '',
      `lastname` VARCHAR(255) NOT NULL DEFAULT '',
      `firstname` VARCHAR(255) NOT NULL DEFAULT '',
      `address1` VARCHAR(128) NOT NULL DEFAULT '',
      `address2` VARCHAR(128) NOT NULL DEFAULT '',
      `postcode` VARCHAR(12) NOT NULL DEFAULT '',
      `city` VARCHAR(64) NOT NULL DEFAULT '',
      `phone` VARCHAR(32) NOT NULL DEFAULT '',
      `date_add` DATETIME NOT NULL,
      `deleted` TINYINT(1) UNSIGNED NOT NULL DEFAULT 0,
      PRIMARY KEY (`id_address`),
      KEY `address_customer` (`id_customer`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    """CREATE TABLE `ps_orders` (
      `id_order` INT(10) UNSIGNED NOT NULL AUTO_INCREMENT,
      `reference` VARCHAR(9) NOT NULL DEFAULT '',
      `id_customer` INT(10) UNSIGNED NOT NULL DEFAULT 0,
      `id_address_delivery` INT(10) UNSIGNED NOT NULL DEFAULT 0,
      `id_address_invoice` INT(10) UNSIGNED NOT NULL DEFAULT 0,
      `total_paid` DECIMAL(20,6) NOT NULL DEFAULT 0.000000,
      `gift_message` TEXT,
      `invoice_date` DATETIME NOT NULL,
      `date_add` DATETIME NOT NULL,
      PRIMARY KEY (`id_order`),
      KEY `order_customer` (`id_customer`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
    # the newsletter module's own table: no customer id, a subscriber of its own
    """CREATE TABLE `ps_emailsubscription` (
      `id` INT(6) NOT NULL AUTO_INCREMENT,
      `email` VARCHAR(255) NOT NULL,
      `newsletter_date_add` DATETIME NULL,
      `ip_registration_newsletter` VARCHAR(15) NOT NULL DEFAULT '',
      `active` TINYINT(1) NOT NULL DEFAULT 0,
      PRIMARY KEY (`id`)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci""",
]

REGISTER = """\
name: php-shop
controller:
  name: Boutique PHP
  contact: dpo@boutique.example
timezone: Europe/Paris
subject_kinds: [customer, subscriber]
events:
  order.closed: an order was delivered, paid and closed
  contact.made: the person contacted the shop or was contacted
  newsletter.subscribed: the person subscribed to the newsletter
  newsletter.unsubscribed: the person unsubscribed
  dispute.opened: a dispute about the person started
  dispute.closed: the dispute ended
  erasure.requested: the person asked for erasure (GDPR art. 17)
holds:
  place: [dispute.opened]
  lift: [dispute.closed]
activities:
  - id: shop.customers
    name: Customer relationship
    role: controller
    controller: Boutique PHP
    subjects: [customer]
    data: [Identity, Addresses, Orders]
    purposes:
      - purpose: Manage orders and the customer relationship
        legal_basis: contract
    retention:
      - clock: [order.closed, contact.made]
        ends_on: [erasure.requested]
        keep: 3 years
        then: pseudonymise
        source: CNIL, customer relationship plus 3 years
        targets:
          - table: ps_customer
            key: id_customer
            columns:
              email: keyed_hash
              firstname: pseudonym
              lastname: redact
              birthday: year
              ip_registration_newsletter: null
              note: null
              date_add: year
          - table: ps_address
            key: id_customer
            columns:
              company: redact
              lastname: redact
              firstname: redact
              address1: redact
              address2: redact
              postcode: department
              city: redact
              phone: redact
          - table: ps_orders
            key: id_customer
            columns:
              gift_message: null
              invoice_date: year
            keeps: [reference, total_paid]
            note: the order's reference and amount back the invoice (Code de commerce L123-22)
  - id: shop.newsletter
    name: Newsletter
    role: controller
    controller: Boutique PHP
    subjects: [subscriber]
    data: [E-mail address]
    purposes:
      - purpose: Send the newsletter
        legal_basis: consent
    retention:
      - opens_on: [newsletter.subscribed]
        clock: [newsletter.unsubscribed]
        ends_on: [erasure.requested]
        keep: 0 days
        then: delete
        source: CNIL, until the person unsubscribes
        targets:
          - table: ps_emailsubscription
            key: id
            delete_rows: true
            suppress: [email]
"""


@dataclass
class PhpShop:
    """The shop's database, what was put in it, and the events its life sent."""

    url: str
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    emails: dict[str, str] = field(default_factory=dict)  # subject -> address

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url)

    def read(self, table: str) -> dict[int, dict[str, Any]]:
        """A table's rows by primary key, as pymysql returns them (zero dates as text)."""
        engine = self.engine()
        try:
            with engine.connect() as connection:
                t = sa.Table(table, sa.MetaData(), autoload_with=connection)
                pk = next(iter(t.primary_key.columns)).name
                return {r[pk]: dict(r) for r in connection.execute(sa.select(t)).mappings()}
        finally:
            engine.dispose()

    def execute(self, *statements: str) -> None:
        engine = self.engine()
        try:
            with engine.begin() as connection:
                for statement in statements:
                    connection.execute(sa.text(statement))
        finally:
            engine.dispose()

    def events_file(self, folder: Path) -> Path:
        path = folder / "events.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in self.events))
        return path


def write_register(folder: Path, lethe: Lethe, text: str = REGISTER) -> Path:
    path = folder / "php-register.yaml"
    path.write_text(text)
    lethe.env["LETHE_REGISTER"] = str(path)
    return path


def _at(moment: datetime) -> str:
    """An event's time: the shop's wall clock in Paris, with its offset (winter or summer)."""
    from zoneinfo import ZoneInfo

    return moment.replace(tzinfo=ZoneInfo("Europe/Paris")).isoformat()


def build_php_shop(url: str, customers: int = 24, subscribers: int = 8) -> PhpShop:
    """The schema and its rows, and the events that brought them there: every third
    customer last ordered recently (not due), the others more than three years before NOW.
    Customer 1 registered on 1 January 2020 at 00:30 in Paris (still 2019 in UTC),
    customer 2 has a zero birthday, every customer's second order is not invoiced yet."""
    shop = PhpShop(url)
    customer_rows, address_rows, order_rows, subscription_rows = [], [], [], []
    for i in range(1, customers + 1):
        subject = f"customer:{i}"
        email = f"client.{i}@example.org"
        shop.emails[subject] = email
        registered = datetime(2020, 1, 1, 0, 30) + timedelta(days=17 * (i - 1))
        birthday: Any = date(1970 + i, 1 + i % 12, 1 + i % 28)
        if i == 2:
            birthday = "0000-00-00"
        elif i % 5 == 0:
            birthday = None
        customer_rows.append(
            {
                "id_customer": i,
                "firstname": f"Prénom{i}",
                "lastname": f"Nom-{i}",
                "email": email,
                "passwd": "$2y$10$notarealhash",
                "birthday": birthday,
                "newsletter": i % 2,
                "ip_registration_newsletter": f"192.0.2.{i}" if i % 2 else None,
                "note": f"appelle le soir {i}" if i % 3 else None,
                "active": 1,
                "date_add": registered,
                "date_upd": registered,
            }
        )
        home, work = 2 * i - 1, 2 * i
        for id_address, alias, company in ((home, "Maison", ""), (work, "Bureau", f"SARL {i}")):
            address_rows.append(
                {
                    "id_address": id_address,
                    "id_customer": i,
                    "alias": alias,
                    "company": company,
                    "lastname": f"Nom-{i}",
                    "firstname": f"Prénom{i}",
                    "address1": f"{i} rue des Lilas",
                    "address2": "",
                    "postcode": ["75008", "20090", "97110", "13001"][i % 4],
                    "city": "Paris",
                    "phone": "" if i % 4 == 0 else f"06 12 34 56 {i:02d}",
                    "date_add": registered,
                }
            )
        recent = i % 3 == 0
        last = datetime(2025, 3, 1, 10) if recent else datetime(2021, 6, 1, 10) + timedelta(days=i)
        for n, placed in enumerate((registered + timedelta(days=3), last)):
            order_rows.append(
                {
                    "id_order": 2 * i - 1 + n,
                    "reference": f"R{i:04d}{n}",
                    "id_customer": i,
                    # both orders of a customer go to the same (shared) home address
                    "id_address_delivery": home,
                    "id_address_invoice": work if n else home,
                    "total_paid": f"{37 * i + n}.500000",
                    "gift_message": "Joyeux anniversaire Marie" if n else None,
                    "invoice_date": ZERO if n else placed + timedelta(hours=2),
                    "date_add": placed,
                }
            )
            shop.events.append(
                {
                    "id": f"order-{2 * i - 1 + n}",
                    "type": "order.closed",
                    "subject": subject,
                    "occurred_at": _at(placed),
                }
            )
    for j in range(1, subscribers + 1):
        subject = f"subscriber:{j}"
        email = f"lecteur.{j}@example.org"
        shop.emails[subject] = email
        joined = datetime(2024, 2, 1, 9) + timedelta(days=j)
        subscription_rows.append(
            {
                "id": j,
                "email": email,
                "newsletter_date_add": joined if j % 4 else ZERO,
                "ip_registration_newsletter": "",
                "active": 1,
            }
        )
        shop.events.append(
            {
                "id": f"nl-in-{j}",
                "type": "newsletter.subscribed",
                "subject": subject,
                "occurred_at": _at(joined),
                "match": {"email": email},
            }
        )
        if j % 2:  # the odd ones left
            shop.events.append(
                {
                    "id": f"nl-out-{j}",
                    "type": "newsletter.unsubscribed",
                    "subject": subject,
                    "occurred_at": _at(joined + timedelta(days=200)),
                    "match": {"email": email},
                }
            )
    shop.rows = {
        "ps_customer": customer_rows,
        "ps_address": address_rows,
        "ps_orders": order_rows,
        "ps_emailsubscription": subscription_rows,
    }
    engine = shop.engine()
    try:
        with engine.begin() as connection:
            for statement in SCHEMA:
                connection.execute(sa.text(statement))
            for table, rows in shop.rows.items():
                columns = list(rows[0])
                insert = sa.text(
                    f"INSERT INTO `{table}` ({', '.join(f'`{c}`' for c in columns)}) "
                    f"VALUES ({', '.join(f':{c}' for c in columns)})"
                )
                connection.execute(insert, rows)
    finally:
        engine.dispose()
    return shop


_END_OF_ORDERS = "            note: the order's reference and amount back the invoice"


def register_with(targets: str) -> str:
    """The register with more targets under shop.customers (after ps_orders')."""
    at = REGISTER.index("\n", REGISTER.index(_END_OF_ORDERS)) + 1
    return REGISTER[:at] + targets + REGISTER[at:]
