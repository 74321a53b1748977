"""Alembic environment for pgqueue's own schema (``pgqueue`` in the target database)."""

from alembic import context
from sqlalchemy import text

SCHEMA = "pgqueue"
# Two `pgqueue migrate` at once: the second waits here, then finds the schema current.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(7403158823390528)"
CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS pgqueue"

config = context.config


def run_offline() -> None:
    context.configure(
        url="postgresql+psycopg://",
        literal_binds=True,
        version_table_schema=SCHEMA,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.execute(MIGRATION_LOCK)
        context.execute(CREATE_SCHEMA)
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        version_table_schema=SCHEMA,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        connection.execute(text(MIGRATION_LOCK))
        connection.execute(text(CREATE_SCHEMA))
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
