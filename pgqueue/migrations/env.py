"""Alembic environment for pgqueue's own schema (``pgqueue`` in the target database)."""

from alembic import context
from sqlalchemy import text

from pgqueue import _store

SCHEMA = "pgqueue"
# Two `pgqueue migrate` at once: the second waits here, then finds the schema current. The
# same statements as the installs by other migration tools (pgqueue._embed).
MIGRATION_LOCK = _store.schema_lock().sql
# First, so that a migrate killed while it waits for that lock or a table's lets go of both.
CLIENT_CHECK = _store.schema_client_check().sql
CREATE_SCHEMA = _store.schema_create().sql

config = context.config


def run_offline() -> None:
    context.configure(
        url="postgresql+psycopg://",
        literal_binds=True,
        version_table_schema=SCHEMA,
        transactional_ddl=True,
    )
    since = context.get_starting_revision_argument()  # `pgqueue migrate --sql --from`'s
    with context.begin_transaction():
        context.execute(CLIENT_CHECK)
        context.execute(MIGRATION_LOCK)
        context.execute(CREATE_SCHEMA)
        if since is not None:
            context.execute(_store.schema_revision_assert(str(since)))
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        version_table_schema=SCHEMA,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        connection.execute(text(CLIENT_CHECK))
        connection.execute(text(MIGRATION_LOCK))
        connection.execute(text(CREATE_SCHEMA))
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
