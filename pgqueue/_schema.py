"""The schema revision this code needs, and the check workers run at start-up."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._errors import SchemaError

# The newest alembic revision in pgqueue/migrations/versions (a test keeps them equal).
SCHEMA_REVISION = "0007"
KNOWN_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")


def schema_problem(exists: bool, revision: str | None) -> str | None:
    """A one-line explanation of what is wrong with the schema, or ``None`` when current."""
    if not exists or revision is None:
        return "pgqueue's schema is not installed in this database: run `pgqueue migrate`"
    if revision == SCHEMA_REVISION:
        return None
    if revision in KNOWN_REVISIONS:
        return (
            f"pgqueue's schema is at revision {revision}, this version needs {SCHEMA_REVISION}:"
            " run `pgqueue migrate`"
        )
    return f"pgqueue's schema is at revision {revision}, newer than this version: upgrade pgqueue"


def schema_state(conn: psycopg.Connection[Any]) -> tuple[bool, str | None]:
    """Whether the schema exists, and its revision, read on a sync connection."""
    with conn.cursor() as cur:
        exists = _store.run(cur, _store.schema_exists())
        return exists, _store.run(cur, _store.schema_revision_get()) if exists else None


async def check_schema(db: Any) -> None:
    """Raise :class:`SchemaError` unless the database has the schema this code needs.

    ``db`` is a worker :class:`~pgqueue._worker._db.Db`.
    """
    exists = await db.run(_store.schema_exists())
    revision = await db.run(_store.schema_revision_get()) if exists else None
    problem = schema_problem(exists, revision)
    if problem:
        raise SchemaError(problem)
