"""A comparable dump of what a migration defined in schema pgqueue (no pg_dump needed)."""

from __future__ import annotations

from tests.helpers import query


def catalog(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    """Everything in schema pgqueue that a migration defines, in a comparable form."""
    queries = {
        "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default, "
        "ordinal_position FROM information_schema.columns WHERE table_schema = 'pgqueue' "
        "ORDER BY 1, 6",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'pgqueue'::regnamespace ORDER BY 1, 2",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'pgqueue' "
        "ORDER BY 1",
        "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'pgqueue' "
        "ORDER BY 1",
        "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
        "WHERE pronamespace = 'pgqueue'::regnamespace ORDER BY 1",
        "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE 'pgqueue.%' ORDER BY 1",
        "tables": "SELECT relname, relkind, reloptions FROM pg_class "
        "WHERE relnamespace = 'pgqueue'::regnamespace ORDER BY 1",
        "version": "SELECT version_num FROM pgqueue.alembic_version",
    }
    return {name: query(dsn, sql) for name, sql in queries.items()}
