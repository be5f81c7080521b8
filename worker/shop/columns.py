"""What the shop's reflected schema says of each target column (its kind, length, integer
size, NULL, UNIQUE, keys), the facts the strategies are checked against."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa

from worker.domain.strategies import ColumnFacts
from worker.shop import mysql
from worker.shop.constraints import (
    Domain,
    Unique,
    domain_base,
)


def column_facts(
    column: sa.Column, unique: list[Unique], dialect: str, zone: str, domain: Domain | None
) -> ColumnFacts:
    # a domain column is what its base type is, with the length the catalog gives
    stored = domain_base(column.type)
    utc_timestamp = isinstance(stored, mysql.UtcTimestamp)
    kind, length = ("datetime", None) if utc_timestamp else column_kind(stored)
    if domain is not None and kind == "text":
        length = domain.length
    aware = kind == "datetime" and (utc_timestamp or bool(getattr(stored, "timezone", False)))
    # a unique index on the first N characters of a column (MySQL's `email(20)`): the
    # strategy's output must differ within them
    prefixes = [u.prefix[column.name] for u in unique if column.name in u.prefix]
    whole_unique = any(column.name in u.columns and column.name not in u.prefix for u in unique)
    return ColumnFacts(
        name=column.name,
        kind=kind,
        length=length,
        integer_bits=integer_bits(stored, dialect) if kind == "integer" else None,
        # a domain over a NOT NULL domain refuses NULL too, which reflection misses
        nullable=bool(column.nullable)
        and not column.primary_key
        and not (domain is not None and domain.not_null),
        # in UNIQUE (customer_id, label) too: a person's two labels redacted would be one
        unique=any(column.name in u.columns for u in unique),
        primary_key=column.primary_key,
        foreign_key=bool(column.foreign_keys),
        padded=isinstance(stored, sa.CHAR),
        zone=zone if aware else None,
        unique_prefix=min(prefixes) if prefixes and not whole_unique else None,
    )


def integer_bits(column_type: sa.types.TypeEngine, dialect: str) -> int:
    if dialect in ("mysql", "mariadb"):
        return mysql.integer_bits(column_type) or 32
    if isinstance(column_type, sa.SmallInteger):
        return 16
    if isinstance(column_type, sa.BigInteger) or dialect == "sqlite":
        return 64  # SQLite's INTEGER holds 64 bits whatever the declared type
    return 32


def column_kind(column_type: sa.types.TypeEngine) -> tuple[str, int | None]:
    if isinstance(column_type, sa.Enum):
        return "other", None  # MySQL's ENUM and SET take their listed values only
    if isinstance(column_type, sa.DateTime):
        return "datetime", None
    if isinstance(column_type, sa.Date):
        return "date", None
    if isinstance(column_type, sa.Integer):
        return "integer", None
    if isinstance(column_type, (sa.Numeric, sa.Float)):  # Float is no Numeric from 2.1 on
        return "numeric", None
    if isinstance(column_type, sa.String):
        return "text", column_type.length
    return "other", None


def referenced_without_cascade(
    inspector: sa.Inspector, tables: set[str], targets: set[str]
) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for table in tables:
        for fk in inspector.get_foreign_keys(table):
            ondelete = (fk.get("options") or {}).get("ondelete") or ""
            if fk["referred_table"] in targets and ondelete.upper() not in ("CASCADE", "SET NULL"):
                found[fk["referred_table"]].add(table)
    return found
