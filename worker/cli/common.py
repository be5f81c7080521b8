"""What every command shares: loading the register and settings, options, output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pendulum

from worker.events import EventRefused, parse_instant
from worker.register import Register, RegisterError, load_register
from worker.settings import Settings, register_path_from_env


def register_or_exit(path: str | Path) -> Register:
    try:
        return load_register(path)
    except RegisterError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        raise SystemExit(1) from None


def default_register() -> str:
    return str(register_path_from_env())


def now_option(value: str | None) -> pendulum.DateTime:
    if value is None:
        return pendulum.now("UTC")
    try:
        return parse_instant(value, "--now")
    except EventRefused as exc:
        raise click.BadParameter(str(exc), param_hint="--now") from None


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
    from worker.migrate import SchemaNotReady, ensure_schema

    settings = settings_or_exit()
    try:
        ensure_schema(settings)
    except SchemaNotReady as exc:
        raise click.ClickException(str(exc)) from None
    return settings.database_url


def configured_register() -> Register:
    return register_or_exit(settings_or_exit().register_path)
