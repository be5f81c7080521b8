"""Alembic environment: the URL comes from the caller (`lethe db upgrade` or the embedded start)."""

from alembic import context

from worker.store.schema import Base
from worker.store.sessions import engine_for

config = context.config
url = config.get_main_option("sqlalchemy.url")
connection = config.attributes.get("connection")


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    with engine_for(url).connect() as conn:
        _run(conn)
        conn.commit()
