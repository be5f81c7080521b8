"""Schema migrations, run by `lethe db upgrade` and automatically on the embedded default."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from worker.settings import Settings, sqlite_file

_SCRIPTS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    # configparser would read '%' in a password as interpolation
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the store at `url` to the newest schema (no-op when already there); returns
    the revisions before and after, so that whoever upgrades can say what it did."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    before = current_revision(url)
    command.upgrade(alembic_config(url), "head")
    return before, head_revision(url)


@lru_cache(maxsize=8)
def head_revision(url: str) -> str:
    """The schema revision this code needs (read from the migration scripts once: the
    dashboard asks on every page)."""
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def schema_behind(current: str | None, head: str) -> str:
    """What is wrong with a store whose schema is not the code's, in one set of words."""
    return f"the store's schema is at {current or 'nothing'}, this code needs {head}"


class SchemaNotReady(RuntimeError):
    """The store's schema is older than this code: the message says what to run."""


def ensure_schema(settings: Settings) -> None:
    """Embedded: migrate on start. Shared store: refuse to start on an old schema.

    A shared PostgreSQL is migrated once, by `lethe db upgrade` (the compose
    stack's one-shot service), never by each worker racing the others.
    """
    current = current_revision(settings.database_url)
    head = head_revision(settings.database_url)
    if settings.database_url.startswith("sqlite"):
        if current != head:  # read first: an upgrade waits for the write lock
            upgrade(settings.database_url)
            if current is not None:
                from worker.logs import log

                log.warning("store schema upgraded", before=current, after=head)
        return
    if current != head:
        raise SchemaNotReady(f"{schema_behind(current, head)}: run `lethe db upgrade` first")


def current_revision(url: str) -> str | None:
    """The store's schema revision; None for a store not made yet (an embedded file that
    does not exist, in a home that may not exist either, is not opened)."""
    from worker.store.sessions import read_only_engine

    path = sqlite_file(url)
    if path is not None and not path.exists():
        return None

    with read_only_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
