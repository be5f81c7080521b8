"""The shop's own triggers on the tables a sweep writes to: only read, and warned about.

What a trigger does with the old values (an audit copy in customers_history, say)
cannot be seen from the catalog, so a target is never refused for one; worker/shop/binding.py
names those a target's write would fire, `lethe shop check` prints them and a sweep
logs them once per process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from worker.shop import mysql


@dataclass(frozen=True)
class Trigger:
    """A trigger of the shop's on a table, and the writes that fire it."""

    name: str
    events: frozenset[str]  # of INSERT, UPDATE, DELETE
    # `UPDATE OF a, b`: an UPDATE fires it only when it writes one of these; None: any
    update_of: frozenset[str] | None = None

    def fired_by(self, write: str | None, columns: Iterable[str] = ()) -> bool:
        """Whether a sweep's DELETE, or its UPDATE of `columns`, runs this trigger."""
        if write not in self.events:
            return False
        if write != "UPDATE" or self.update_of is None:
            return True
        # PostgreSQL compares exact names and SQLite any case; a false warning is the
        # cheaper mistake, so both compare without case
        return bool(self.update_of & {c.casefold() for c in columns})


# PostgreSQL's pg_trigger.tgtype bits for the events (src/include/catalog/pg_trigger.h)
_TGTYPE_EVENTS = {4: "INSERT", 8: "DELETE", 16: "UPDATE"}
_POSTGRES_TRIGGERS = sa.text(
    "WITH t AS (SELECT to_regclass(format('%I.%I', current_schema(), CAST(:table AS text))) "
    "AS oid) "
    # tgisinternal: a foreign key's own triggers; a disabled trigger copies nothing
    "SELECT tgname, tgtype, ARRAY(SELECT attname::text FROM pg_attribute "
    "WHERE attrelid = tgrelid AND attnum = ANY(CAST(tgattr AS int2[]))) FROM pg_trigger, t "
    "WHERE tgrelid = t.oid AND NOT tgisinternal AND tgenabled <> 'D' "
    # a rule (CREATE RULE ... ON UPDATE DO ALSO INSERT ...) can copy old values as a
    # trigger does: its ev_type becomes the tgtype bit of its event, with no column list
    "UNION ALL SELECT 'rule ' || rulename, CASE ev_type WHEN '2' THEN 16 WHEN '4' THEN 8 "
    "ELSE 4 END, ARRAY[]::text[] FROM pg_rewrite, t "
    "WHERE ev_class = t.oid AND ev_type IN ('2', '3', '4') AND ev_enabled <> 'D' ORDER BY 1"
)
_SQLITE_TRIGGERS = sa.text(
    # SQLite's names are case-insensitive: `ON CUSTOMERS` is on customers
    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
    "AND tbl_name = :table COLLATE NOCASE ORDER BY name"
)


def table_triggers(inspector: sa.Inspector, table: str) -> list[Trigger]:
    """The shop's own triggers on a table (PostgreSQL, MariaDB/MySQL and SQLite)."""
    dialect = inspector.bind.dialect.name
    if mysql.is_mysql(inspector.bind.dialect):
        with inspector.bind.connect() as connection:
            found = mysql.trigger_events(connection, table)
        return [Trigger(name, frozenset({event.upper()})) for name, event in found]
    if dialect not in ("postgresql", "sqlite"):
        return []
    query = _POSTGRES_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS
    with inspector.bind.connect() as connection:
        rows = connection.execute(query, {"table": table}).all()
    if dialect == "postgresql":
        return [
            Trigger(
                name,
                frozenset(e for bit, e in _TGTYPE_EVENTS.items() if tgtype & bit),
                frozenset(c.casefold() for c in update_of) or None,
            )
            for name, tgtype, update_of in rows
        ]
    return [sqlite_trigger(name, sql or "") for name, sql in rows]


_SQLITE_NAME = r"(?:\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`|\[[^\]]*\]|'(?:[^']|'')*'|[\w$]+)"
_SQLITE_TRIGGER = re.compile(
    rf"\s*CREATE\s+(?:TEMP(?:ORARY)?\s+)?TRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?:{_SQLITE_NAME}\s*\.\s*)?{_SQLITE_NAME}\s*"
    rf"(?:(?:BEFORE|AFTER|INSTEAD\s+OF)\s+)?(?P<event>DELETE|INSERT|UPDATE)\b"
    rf"(?:\s+OF\s+(?P<columns>{_SQLITE_NAME}(?:\s*,\s*{_SQLITE_NAME})*)\s+ON\b)?",
    re.IGNORECASE,
)
_QUOTES = {'"': '"', "`": "`", "[": "]", "'": "'"}


def sqlite_trigger(name: str, sql: str) -> Trigger:
    """A SQLite trigger as its CREATE TRIGGER text declares it; one that cannot be read
    counts as firing on any UPDATE and DELETE, so it is warned about rather than missed."""
    found = _SQLITE_TRIGGER.match(sql)
    if found is None:
        return Trigger(name, frozenset({"UPDATE", "DELETE"}))
    update_of = None
    if found["columns"]:
        update_of = frozenset(
            _unquoted(c.group()).casefold() for c in re.finditer(_SQLITE_NAME, found["columns"])
        )
    return Trigger(name, frozenset({found["event"].upper()}), update_of)


def _unquoted(name: str) -> str:
    close = _QUOTES.get(name[0])
    if close is None:
        return name
    return name[1:-1].replace(close * 2, close) if close != "]" else name[1:-1]


@dataclass(frozen=True)
class FiredTriggers:
    """A table whose own triggers a sweep's writes would fire: only warned about, since
    what a trigger does with the old values (an audit copy in customers_history, say)
    cannot be seen from its catalog entry."""

    table: str
    triggers: tuple[str, ...]
    writes: tuple[str, ...]  # UPDATE (anonymising targets), DELETE (delete_rows)

    def __str__(self) -> str:
        verbs = " and ".join({"UPDATE": "updates", "DELETE": "deletes"}[w] for w in self.writes)
        return (
            f"warning: table {self.table!r} has triggers that run when a sweep {verbs} its "
            f"rows ({', '.join(self.triggers)}): Lethe cannot see what a trigger does; "
            f"{TRIGGER_REMEDY}"
        )


TRIGGER_REMEDY = (
    "if one copies old values elsewhere (an audit or history table), that table needs "
    "a target of its own"
)
