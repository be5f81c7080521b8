"""MariaDB and MySQL shop databases: what their driver, catalog and TIMESTAMPs need that
PostgreSQL's and SQLite's do not (docs/php-shops.md, "MariaDB and MySQL shop databases").

SQLAlchemy's reflection reads MariaDB's tables, columns, indexes and foreign keys well,
but not everything the shop check needs: a column-level CHECK (`email VARCHAR(128)
CHECK (email LIKE '%@%')`, PHP installers' usual form) is missing from what it parses
out of SHOW CREATE TABLE, and it has no triggers at all. Both come from
information_schema here. An integrity error's message quotes the row's values
(`Duplicate entry 'jeanne@example.org' for key 'email'`): only its code and the
constraint's name are kept.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

# pymysql's own default is utf8mb4 too, named so a server whose default is latin1 still
# gives Python the shop's text as it is. The session's time zone is UTC so that a
# TIMESTAMP (stored in UTC, converted to the session's zone on every read and write)
# reads as the moment it is: the server here has no named zones loaded (`SET time_zone =
# 'Europe/Paris'` fails with error 1298), and a fixed offset would be wrong half the year.
# DATETIME, the PHP shops' usual column, is never converted: it is the shop's wall clock.
# NO_ZERO_DATE and NO_ZERO_IN_DATE go from the session's sql_mode: a sweep writes a
# row's target columns back whole, a zero date left as it is included, and under a strict
# mode with them MariaDB refuses that (error 1292). Lethe never makes a zero date.
SESSION_SETUP = (
    "SET time_zone = '+00:00', sql_mode = "
    "REPLACE(REPLACE(@@sql_mode, 'NO_ZERO_IN_DATE', ''), 'NO_ZERO_DATE', '')"
)
CONNECT_ARGS = {"charset": "utf8mb4", "init_command": SESSION_SETUP, "connect_timeout": 10}
# MySQL closes a connection idle for wait_timeout (8 hours by default): a worker's pool
# between two nightly sweeps would hand out dead ones, so they are replaced before that.
POOL_RECYCLE = 3600


def is_mysql(dialect: Dialect) -> bool:
    """MariaDB or MySQL, whichever URL named it (`mysql+pymysql://` reaching MariaDB too)."""
    return dialect.name in ("mysql", "mariadb")


# MariaDB names a column-level CHECK after its column and keeps TABLE_NAME in
# CHECK_CONSTRAINTS; MySQL 8 has no TABLE_NAME there (a CHECK's name is unique in its
# schema), so it is joined from TABLE_CONSTRAINTS.
_MARIADB_CHECKS = sa.text(
    "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = :table ORDER BY CONSTRAINT_NAME"
)
_MYSQL_CHECKS = sa.text(
    "SELECT cc.CONSTRAINT_NAME, cc.CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS cc "
    "JOIN information_schema.TABLE_CONSTRAINTS tc ON tc.CONSTRAINT_SCHEMA = cc.CONSTRAINT_SCHEMA "
    "AND tc.CONSTRAINT_NAME = cc.CONSTRAINT_NAME AND tc.CONSTRAINT_TYPE = 'CHECK' "
    "WHERE cc.CONSTRAINT_SCHEMA = DATABASE() AND tc.TABLE_NAME = :table "
    "ORDER BY cc.CONSTRAINT_NAME"
)


def check_clauses(connection: Connection, table: str) -> list[tuple[str, str]]:
    """(name, expression) of every CHECK on the table, column-level ones included. None
    before MariaDB 10.2 and MySQL 8.0.16, which parsed CHECKs and enforced nothing."""
    query = _MARIADB_CHECKS if getattr(connection.dialect, "is_mariadb", False) else _MYSQL_CHECKS
    try:
        return [(name, clause) for name, clause in connection.execute(query, {"table": table})]
    except sa.exc.ProgrammingError:  # no CHECK_CONSTRAINTS table: nothing is enforced
        connection.rollback()
        return []


_TRIGGERS = sa.text(
    "SELECT TRIGGER_NAME, EVENT_MANIPULATION FROM information_schema.TRIGGERS "
    "WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = :table "
    "ORDER BY TRIGGER_NAME"
)


def trigger_events(connection: Connection, table: str) -> list[tuple[str, str]]:
    """(name, INSERT | UPDATE | DELETE) of the table's triggers. MySQL has no `UPDATE OF
    columns`: an UPDATE trigger fires on any UPDATE of the row."""
    return [(name, event) for name, event in connection.execute(_TRIGGERS, {"table": table})]


def prefix_lengths(index: dict[str, Any]) -> dict[str, int]:
    """The characters a reflected index keeps of each column (`UNIQUE KEY (email(20))`
    keeps 20): a unique prefix refuses two values that only differ after it."""
    lengths = (index.get("dialect_options") or {}).get("mysql_length")
    if isinstance(lengths, int):  # one column
        return {index["column_names"][0]: lengths}
    return dict(lengths or {})


def integer_bits(column_type: sa.types.TypeEngine) -> int | None:
    """TINYINT and MEDIUMINT hold 8 and 24 bits; an UNSIGNED column one more above 0."""
    from sqlalchemy.dialects import mysql

    bits = None
    if isinstance(column_type, mysql.TINYINT):
        bits = 8
    elif isinstance(column_type, mysql.MEDIUMINT):
        bits = 24
    elif isinstance(column_type, mysql.SMALLINT):
        bits = 16
    elif isinstance(column_type, mysql.BIGINT):
        bits = 64
    elif isinstance(column_type, sa.Integer):
        bits = 32
    if bits is not None and getattr(column_type, "unsigned", False):
        bits += 1
    return bits


class UtcTimestamp(sa.types.TypeDecorator):
    """A MySQL TIMESTAMP read as the aware moment it is (the session's zone is UTC,
    CONNECT_ARGS) and written back as UTC, so `year` begins the year in the register's
    zone, as on a PostgreSQL timestamptz."""

    impl = sa.types.DateTime
    cache_ok = True
    timezone = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value  # a zero date, which pymysql gives as text: no moment at all


def utc_timestamps(table: sa.Table) -> None:
    """The reflected table's TIMESTAMP columns typed as UtcTimestamp."""
    for column in table.columns:
        if isinstance(column.type, sa.TIMESTAMP) and not isinstance(column.type, UtcTimestamp):
            column.type = UtcTimestamp()


_CONSTRAINT_NAME = r"[A-Za-z_][A-Za-z0-9_$]{0,63}"
# server error codes (MariaDB's and MySQL's own numbering), each with what names the
# constraint at the END of its message, after any value the message quotes
_MYSQL_KINDS = {
    1062: ("UNIQUE", re.compile(rf"for key '(?:{_CONSTRAINT_NAME}\.)*({_CONSTRAINT_NAME})'$")),
    1048: ("NOT NULL", re.compile(rf"^Column '({_CONSTRAINT_NAME})' cannot be null$")),
    # MariaDB: "CONSTRAINT `email` failed for `shop`.`ps_customer`"
    4025: ("CHECK", re.compile(rf"^CONSTRAINT `({_CONSTRAINT_NAME})` failed for ")),
    # MySQL 8: "Check constraint 'email_has_at' is violated."
    3819: ("CHECK", re.compile(rf"^Check constraint '({_CONSTRAINT_NAME})' is violated\.$")),
    1451: ("FOREIGN KEY", re.compile(rf"CONSTRAINT `({_CONSTRAINT_NAME})` FOREIGN KEY")),
    1406: ("length", re.compile(rf"^Data too long for column '({_CONSTRAINT_NAME})' at row")),
}


def mysql_constraint(orig: Any) -> str | None:
    """Kind and name of the constraint a pymysql error names, never the values it quotes."""
    args = getattr(orig, "args", ())
    if type(orig).__module__.split(".")[0] != "pymysql" or len(args) < 2:
        return None
    kind = _MYSQL_KINDS.get(args[0])
    if kind is None or not isinstance(args[1], str):
        return None
    found = kind[1].search(args[1])
    if found is None:
        return None
    if kind[0] == "length":
        return f"column {found[1]} too short"
    return f"{kind[0]} constraint {found[1]}"


def exactly_one_of(column: sa.Column, values: list[Any]) -> Any:
    """`column IN (values)` compared byte for byte. MySQL's usual collations ignore case
    and trailing blanks (utf8mb4_general_ci, and even utf8mb4_bin pads), so `visitor:ab`
    would find the rows of `visitor:AB` and `visitor:ab `, other people. The plain IN
    keeps the key's index in use; the column goes to utf8mb4 first, then to bytes, which
    compare exactly whatever the table's charset (latin1, utf8mb3)."""
    exact = sa.literal_column(
        f"CAST(CONVERT({_quoted(column.name)} USING utf8mb4) AS BINARY)", type_=column.type
    )
    return sa.and_(column.in_(values), exact.in_(values))


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# What pymysql raises as OperationalError although the server is well and only refuses
# the row: a CHECK (MariaDB 4025, MySQL 3819), a trigger's SIGNAL (1644), a value its
# column's type refuses under a strict sql_mode (1292). Taken for
# an outage, one refused person would roll back every batch at every sweep, for good.
_REFUSALS = frozenset({4025, 3819, 1644, 1292})


def refusal_as_integrity_error(context: Any) -> Exception | None:
    """For the engine's handle_error event: a refusal raised as IntegrityError, as
    PostgreSQL's and SQLite's drivers raise it, so that the sweep fails that person alone."""
    orig = context.original_exception
    if context.is_disconnect or type(orig).__module__.split(".")[0] != "pymysql":
        return None
    if not orig.args or orig.args[0] not in _REFUSALS:
        return None
    return sa.exc.IntegrityError(context.statement, None, orig, hide_parameters=True)


def joined_update(
    dialect: Dialect,
    table: sa.Table,
    pk: tuple[str, ...],
    columns: list[str],
    changes: list[dict[str, Any]],
) -> tuple[str, tuple[Any, ...]]:
    """One `UPDATE t JOIN (SELECT .. UNION ALL SELECT ..) u ON t.pk = u.k SET t.c = u.v`
    for a chunk's rows, and its parameters (`pk_<name>` and the columns, per change).

    pymysql's executemany sends an UPDATE per row: one round trip each, 1.4 ms on this
    machine under load, 20 times the PostgreSQL sweep's rate per row (bench/README.md,
    "MariaDB shop"). The rows as a derived table of UNION ALL SELECTs read on MariaDB
    10.x and MySQL 5.7 and 8 alike (a VALUES table is spelled differently by each).
    Values go through each column's own bind processing (a TIMESTAMP's UTC), as an
    executemany's would."""
    # the dialect's preparer doubles a name's % already, as pymysql's format paramstyle needs
    preparer = dialect.identifier_preparer
    quote = preparer.quote
    keys = [(f"k{i}", name) for i, name in enumerate(pk)]
    values = [(f"v{i}", name) for i, name in enumerate(columns)]
    first = "SELECT " + ", ".join(f"%s AS {alias}" for alias, _ in keys + values)
    rest = " UNION ALL SELECT " + ", ".join(["%s"] * (len(keys) + len(values)))
    sql = (
        f"UPDATE {preparer.format_table(table)} AS t "
        f"JOIN ({first}{rest * (len(changes) - 1)}) AS u ON "
        + " AND ".join(f"t.{quote(name)} = u.{alias}" for alias, name in keys)
        + " SET "
        + ", ".join(f"t.{quote(name)} = u.{alias}" for alias, name in values)
    )
    fields = [(f"pk_{name}", table.c[name].type) for name in pk]
    fields += [(name, table.c[name].type) for name in columns]
    processors = [(field, column_type.bind_processor(dialect)) for field, column_type in fields]
    params = tuple(
        process(change[field]) if process else change[field]
        for change in changes
        for field, process in processors
    )
    return sql, params
