"""One settings object, read from the environment (names are a contract: keep them).

With nothing set, Lethe runs embedded: SQLite files and a broker that needs
no server, under `LETHE_HOME` (default `./var`).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from worker.domain.register_file import default_register_path


class SettingsError(RuntimeError):
    """A setting is missing or unusable; the message names the variable."""


@dataclass(frozen=True)
class SweepSettings:
    """When sweeps run and when they stop for a DPO's approval (LETHE_SWEEP_*)."""

    at: str = "03:00"  # LETHE_SWEEP_AT, local time in `timezone`
    report_at: str = "07:00"  # LETHE_REPORT_AT: the daily report
    timezone: str = "Europe/Paris"  # LETHE_SWEEP_TIMEZONE
    # LETHE_SWEEP_BATCH: lifecycles claimed per transaction, and the forgetting pass's page.
    # 2000: against 500, a sweep of 90,000 lifecycles took 5.8-5.9 s instead of 8.3-8.8
    # and forgetting 4.0 s instead of 5.3-6.7 (bench/README.md, "the default batch"); a
    # batch still holds its shop rows for a fraction of a second.
    batch: int = 2000
    parts: int = 1  # LETHE_SWEEP_PARTS: workers sharing one scheduled sweep
    max_factor: float = 10.0  # LETHE_SWEEP_MAX_FACTOR: x the median of recent sweeps
    max_share: float = 0.5  # LETHE_SWEEP_MAX_SHARE: of a shop table's rows
    alarm_floor: int = 100  # LETHE_SWEEP_ALARM_FLOOR: smaller sweeps never need approval
    history: int = 10  # LETHE_SWEEP_HISTORY: recent sweeps whose median max_factor scales
    min_history: int = 3  # LETHE_SWEEP_MIN_HISTORY: fewer done sweeps, no median compared
    # LETHE_DEAD_LETTER_DAYS: refused events are kept whole for a replay, personal
    # data included; each sweep drops those older than this.
    dead_letter_days: int = 30
    # LETHE_SUPPRESSION_DAYS: an address on the suppression list is kept this long after
    # its latest opposition or subscription (CNIL: three years from the opposition;
    # 1096 days covers any three calendar years); each sweep drops those older.
    suppression_days: int = 1096
    # LETHE_FORGET_AFTER_DAYS: Lethe's own records of a person whose every lifecycle is
    # erased (events, lifecycle dates) and lifted holds are kept this long after the
    # latest erasure or lift, for late events and a DPO's questions; each sweep drops
    # older ones (worker/sweeps/forgetting.py). The audit, which names no one, stays.
    forget_after_days: int = 365


@dataclass(frozen=True)
class Settings:
    home: Path
    broker_url: str
    database_url: str
    shop_database_url: str
    register_path: Path
    secret: bytes
    dashboard_token: str | None
    queue_prefix: str
    sweep: SweepSettings = field(default_factory=SweepSettings)
    # LETHE_OUTBOX_EVERY: seconds between two runs of the outbox relay (beat's schedule)
    outbox_every: float = 2.0
    # LETHE_INTAKE_TOKEN: the HTTP intake's own bearer token (`lethe intake`)
    intake_token: str | None = None

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    """This process's settings, read once from the environment."""
    return load_settings()


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env.get("LETHE_HOME") or "var").resolve()  # set but empty: the default
    broker_url = env.get("LETHE_BROKER_URL") or "filesystem://"
    database_url = env.get("LETHE_DATABASE_URL") or f"sqlite:///{home / 'lethe.sqlite3'}"
    shop_url = env.get("LETHE_SHOP_DATABASE_URL") or f"sqlite:///{home / 'shop.sqlite3'}"
    register_path = register_path_from_env(env)
    return Settings(
        home=home,
        broker_url=broker_url,
        database_url=database_url,
        shop_database_url=shop_url,
        register_path=register_path,
        secret=_secret(env, home, embedded=broker_url.startswith("filesystem://")),
        dashboard_token=env.get("LETHE_DASHBOARD_TOKEN") or None,
        queue_prefix=env.get("LETHE_QUEUE_PREFIX") or "lethe",
        sweep=_sweep_settings(env, embedded=broker_url.startswith("filesystem://")),
        outbox_every=read_number(env, "LETHE_OUTBOX_EVERY", 2.0, most=3600),
        intake_token=env.get("LETHE_INTAKE_TOKEN") or None,
    )


MOST_DAYS = 36_525


def read_number(
    env: Mapping[str, str], name: str, default: Any, cast: type = float, most: float | None = None
) -> Any:
    """A positive number read from `env` (`default` when unset or empty), refused with its
    name when it is not one, or is more than `most`."""
    value = env.get(name)
    if not value:
        return default
    what = "a whole number" if cast is int else "a number"
    try:
        parsed = cast(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not {what}") from None
    if parsed != parsed:  # NaN compares false with everything, limits included
        raise SettingsError(f"{name}={value!r} is not {what}")
    if parsed <= 0:
        raise SettingsError(f"{name}={value!r} must be positive")
    if most is not None and parsed > most:
        raise SettingsError(f"{name}={value!r} is more than {most:g}")
    return parsed


def whole_number(name: str, default: int) -> int:
    """A positive count from the process environment (the broker's and workers' own)."""
    return read_number(os.environ, name, default, int)


def _sweep_settings(env: dict[str, str], embedded: bool) -> SweepSettings:
    def number(name: str, default: Any, cast: type = float, most: float | None = None) -> Any:
        return read_number(env, name, default, cast, most)

    # A period in days is taken from a clock: beyond a century, the date before it leaves
    # what Python's datetime can hold, and every sweep would fail on it.
    def days(name: str, default: int) -> int:
        return number(name, default, int, most=MOST_DAYS)

    for name in ("LETHE_SWEEP_AT", "LETHE_REPORT_AT"):
        value = env.get(name)
        if value and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise SettingsError(f"{name}={value!r} is not a time of day: use HH:MM, e.g. 03:00")
    zone = env.get("LETHE_SWEEP_TIMEZONE") or SweepSettings.timezone
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"LETHE_SWEEP_TIMEZONE={zone!r} is not a known time zone: use an IANA name "
            "such as Europe/Paris"
        ) from None
    history = number("LETHE_SWEEP_HISTORY", SweepSettings.history, int)
    min_history = number("LETHE_SWEEP_MIN_HISTORY", SweepSettings.min_history, int)
    if min_history > history:
        # the median would never be read, so no sweep would ever stop for its size
        raise SettingsError(
            f"LETHE_SWEEP_MIN_HISTORY={min_history} is more than LETHE_SWEEP_HISTORY="
            f"{history}, the sweeps the median reads: no sweep would ever be compared with "
            "it; make LETHE_SWEEP_MIN_HISTORY at most LETHE_SWEEP_HISTORY"
        )
    return SweepSettings(
        at=env.get("LETHE_SWEEP_AT") or SweepSettings.at,
        report_at=env.get("LETHE_REPORT_AT") or SweepSettings.report_at,
        timezone=zone,
        batch=number("LETHE_SWEEP_BATCH", SweepSettings.batch, int),
        # Embedded runs one worker process: parts beyond one would only queue.
        parts=number("LETHE_SWEEP_PARTS", 1 if embedded else 2, int),
        max_factor=number("LETHE_SWEEP_MAX_FACTOR", SweepSettings.max_factor),
        max_share=number("LETHE_SWEEP_MAX_SHARE", SweepSettings.max_share),
        alarm_floor=number("LETHE_SWEEP_ALARM_FLOOR", SweepSettings.alarm_floor, int),
        history=history,
        min_history=min_history,
        dead_letter_days=days("LETHE_DEAD_LETTER_DAYS", SweepSettings.dead_letter_days),
        suppression_days=days("LETHE_SUPPRESSION_DAYS", SweepSettings.suppression_days),
        forget_after_days=days("LETHE_FORGET_AFTER_DAYS", SweepSettings.forget_after_days),
    )


def register_path_from_env(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("LETHE_REGISTER") or default_register_path())


def _secret(env: dict[str, str], home: Path, embedded: bool) -> bytes:
    value = env.get("LETHE_SECRET")
    if value:
        if len(value) < 16:
            raise SettingsError("LETHE_SECRET is shorter than 16 characters: use a random value")
        return value.encode()
    if not embedded:
        raise SettingsError(
            "LETHE_SECRET is not set: a shared broker and store need one key for the "
            "subject hashes on every machine (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`)"
        )
    # Embedded mode keeps its own random key beside its data, never one in the code.
    path = home / "secret"
    try:
        if not path.exists():
            home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(32))
        return path.read_text().strip().encode()
    except OSError as exc:
        raise SettingsError(
            f"LETHE_HOME={home} cannot hold Lethe's files ({exc.strerror or exc}): make it "
            "a folder this user can write, or point LETHE_HOME elsewhere"
        ) from None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (`sqlite:///path`, query string or not); None for another
    database, SQLite in memory, or what is no URL at all (whoever opens it says so)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def safe_url(url: str) -> str:
    """A broker or database URL fit to print: the password masked, whatever it holds
    (a `/` or an `@` written unescaped included)."""
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: mask it by hand below
        shown = url
    scheme, sep, rest = shown.partition("://")
    credentials, at, host = rest.rpartition("@")  # the host follows the last @
    if not at or ":" not in credentials:
        return shown
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
