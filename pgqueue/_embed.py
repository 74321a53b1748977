"""Installing pgqueue's schema from another migration tool (Django, a user's alembic history).

The statements are the same SQL files pgqueue's own alembic revisions run, and the revision is
recorded in ``pgqueue.alembic_version`` too, so ``pgqueue migrate --check``, workers and a later
``pgqueue migrate`` all agree with whichever tool installed the schema.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._errors import SchemaError
from pgqueue._schema import KNOWN_REVISIONS, schema_problem, schema_state_on
from pgqueue.migrations import sql_files

log = logging.getLogger("pgqueue.migrate")

# Runs one of the store's queries in the calling tool's transaction and returns what it reads.
Run = Callable[[_store.Query[Any]], Any]


def _log_notice(diagnostic: psycopg.errors.Diagnostic) -> None:
    message = diagnostic.message_primary or ""
    if message.startswith("pgqueue "):  # a revision telling what it changed in the rows
        log.warning("%s", message, extra={"action": "migration_notice"})


@contextlib.contextmanager
def notices_logged(conn: psycopg.BaseConnection[Any]) -> Iterator[None]:
    """Log, while migrating on ``conn``, what a revision's SQL says about the rows it
    repaired (its NOTICEs starting "pgqueue "): psycopg drops NOTICEs unless told otherwise."""
    conn.add_notice_handler(_log_notice)
    try:
        yield
    finally:
        conn.remove_notice_handler(_log_notice)


def installed_revision(cur: psycopg.Cursor[Any]) -> str | None:
    """The revision recorded in the database, or ``None`` when the schema is not there."""
    if not _store.run(cur, _store.schema_exists()):
        return None
    return _store.run(cur, _store.schema_revision_get())


def is_installed(recorded: str | None, revision: str) -> bool:
    """Whether ``recorded`` is ``revision`` or later (an unknown revision is a newer one)."""
    if recorded is None:
        return False
    if recorded not in KNOWN_REVISIONS:
        return True
    return KNOWN_REVISIONS.index(recorded) >= KNOWN_REVISIONS.index(revision)


def install_revision(
    cur: psycopg.Cursor[Any], revision: str, run_file: Callable[[str], None]
) -> bool:
    """Apply ``revision`` (and the revisions between the installed one and it) unless it, or a
    later one, is installed; returns whether anything ran.

    ``run_file`` executes one SQL file's text with the calling tool, in the same transaction
    as ``cur``. A schema a later pgqueue installed counts as installed if it still serves this
    code (``pgqueue.compatible_since()``); otherwise :class:`SchemaError` says to upgrade.
    """
    return install_revision_on(partial(_store.run, cur), cur.connection, revision, run_file)


def install_revision_on(
    run: Run, conn: psycopg.BaseConnection[Any], revision: str, run_file: Callable[[str], None]
) -> bool:
    """:func:`install_revision`, with ``run`` running each of pgqueue's statements in the
    calling tool's transaction on ``conn`` (whose NOTICEs are logged): a tool holding an async
    psycopg connection behind a sync facade (alembic's async template) runs them through it."""
    if revision not in KNOWN_REVISIONS:
        raise ValueError(f"unknown pgqueue schema revision {revision!r}")
    # As `pgqueue migrate`: killed while it waits for a lock, the tool's backend lets go.
    run(_store.schema_client_check())
    run(_store.schema_lock())
    exists, recorded, compatible_since = schema_state_on(run)
    if recorded is not None and recorded not in KNOWN_REVISIONS:
        # A later pgqueue migrated this database. "Nothing to do" is true only if the schema
        # still serves this code; otherwise say so now, as `pgqueue migrate` does, rather than
        # let the migration pass and every worker refuse the schema afterwards.
        problem = schema_problem(exists, recorded, compatible_since)
        if problem:
            raise SchemaError(problem)
        return False
    if is_installed(recorded, revision):
        return False
    run(_store.schema_create())
    run(_store.schema_version_table_create())
    # Every revision after the recorded one, up to ``revision``: each builds on the one before.
    first = 0 if recorded is None else KNOWN_REVISIONS.index(recorded) + 1
    with notices_logged(conn):
        for step in KNOWN_REVISIONS[first : KNOWN_REVISIONS.index(revision) + 1]:
            for text in sql_files(step):
                run_file(text)
    run(_store.schema_revision_clear())
    run(_store.schema_revision_insert(revision))
    return True
