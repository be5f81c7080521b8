"""What every command shares: loading the register and settings, options, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pendulum

from worker.domain.events import EventRefused, check_subject, parse_instant
from worker.domain.register import Register
from worker.domain.register_file import RegisterError, load_register, not_utf8_message
from worker.settings import Settings, register_path_from_env

if TYPE_CHECKING:
    from worker.shop.binding import ShopMismatch


def register_or_exit(path: str | Path) -> Register:
    try:
        return load_register(path)
    except RegisterError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None


# The last line of every command stopped by a shop that does not fit the register.
SHOP_MISMATCH = "the register's targets do not fit the shop schema"


@contextmanager
def shop_errors() -> Iterator[None]:
    """A shop database that does not fit the register, or cannot be reached, as the
    command's error: each problem on stderr (it names the table or column and what to
    change), then one line that says why the command stopped; exit status 1."""
    from worker.shop.binding import ShopMismatch, ShopUnavailable

    try:
        yield
    except ShopMismatch as exc:
        raise shop_mismatch(exc) from None
    except ShopUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def shop_mismatch(exc: ShopMismatch) -> click.ClickException:
    """Each problem of a mismatch on stderr; returns the error that ends the command."""
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    return click.ClickException(SHOP_MISMATCH)


def default_register() -> str:
    return str(register_path_from_env())


def now_option(value: str | None, option: str = "--now") -> pendulum.DateTime:
    """An instant given on the command line; `option` (`--until`, `--due-before`...)
    names it in errors."""
    if value is None:
        return pendulum.now("UTC")
    try:
        return parse_instant(value, option)
    except EventRefused as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def subject_or_exit(subject: str | None, register: Register | None = None) -> str | None:
    """A `--subject` value checked as KIND:ID (never echoed: it may be an e-mail address)."""
    if subject is None:
        return None
    try:
        check_subject(subject, register)
    except EventRefused as exc:
        raise click.BadParameter(str(exc), param_hint="--subject") from None
    return subject


def empty_audit_note(url: str, subject: str | None, run_id: int | None) -> str | None:
    """Why `lethe audit` found no rows, when it was asked about a subject or a sweep run.

    Said on stderr by the caller: an empty table, `[]` or a CSV header alone stay
    the output, but "no rows" and "no such run" must not look alike.
    """
    from worker.store.schema import PurgeRun
    from worker.store.sessions import transaction

    if run_id is not None:
        with transaction(url) as session:
            if session.get(PurgeRun, run_id) is None:
                return f"no sweep run {run_id}"
        if subject:
            return f"no audit rows for this subject in sweep run {run_id}"
        return f"sweep run {run_id} erased nothing"
    if subject:
        return "no audit rows for this subject"
    return None


def note(message: str) -> None:
    """A remark for the person at the terminal: on stderr, so stdout stays parseable."""
    click.echo(message, err=True)


def text_lines(path: str, param_hint: str) -> Iterator[tuple[int, str]]:
    """The numbered lines of a UTF-8 text file (`-` is stdin).

    Decoded line by line, so a file that is not UTF-8 is reported at its own line
    (a usage error, exit 2, as for a missing file) instead of as a traceback.
    """
    with click.open_file(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                # utf-8-sig: editors that "save as UTF-8" on Windows add a byte order mark
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise click.BadParameter(
                    f"{path}:{number}: {not_utf8_message(exc)}", param_hint=param_hint
                ) from None


def table(rows: list[dict], columns: list[str]) -> str:
    def cell(row: dict, column: str) -> str:
        value = row.get(column)
        return "-" if value is None or value == "" else str(value)

    widths = {c: max([len(c), *(len(cell(r, c)) for r in rows)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(cell(r, c).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def print_rows(rows: list[dict], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        click.echo(table(rows, columns))


def settings_or_exit() -> Settings:
    from worker.settings import SettingsError, current_settings

    try:
        return current_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def store_url() -> str:
    """The store's URL, migrated when embedded (so every command works on a fresh machine)."""
    from worker.store.migrate import SchemaNotReady, ensure_schema

    settings = settings_or_exit()
    try:
        ensure_schema(settings)
    except SchemaNotReady as exc:
        raise click.ClickException(str(exc)) from None
    return settings.database_url


def configured_register() -> Register:
    return register_or_exit(settings_or_exit().register_path)
