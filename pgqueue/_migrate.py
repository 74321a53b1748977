"""Applying pgqueue's alembic migrations from Python and the CLI."""

from __future__ import annotations

import io
import logging
from typing import Any

import psycopg

from pgqueue._connections import normalize_dsn
from pgqueue._embed import notices_logged
from pgqueue._errors import SchemaError
from pgqueue._schema import KNOWN_REVISIONS, schema_problem, schema_state


def _config(**attributes: Any) -> Any:
    from alembic.config import Config

    # stdout takes alembic's messages; output_buffer the SQL of an offline (sql=True) run,
    # which alembic writes to sys.stdout when none is given.
    config = Config(stdout=io.StringIO(), output_buffer=attributes.pop("output_buffer", None))
    config.set_main_option("script_location", "pgqueue:migrations")
    config.attributes.update(attributes)
    return config


def _quiet_alembic() -> None:
    # alembic logs its plugin set-up at INFO on import; operators only need our one line.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def migrate(dsn: str) -> tuple[str | None, str | None]:
    """Bring the database's pgqueue schema up to date. Idempotent; concurrent runs are safe.

    Returns the schema's revision before and after (``None`` before: there was no schema);
    the two are equal when there was nothing to do. "Before" is read before the migration
    lock is waited for: a concurrent run may have done the work meanwhile."""
    _quiet_alembic()
    from alembic.util import CommandError

    dsn = normalize_dsn(dsn)
    current, before = _looked(dsn)
    if current:
        return before, before
    try:
        _upgrade(dsn)
    except CommandError:
        # A later pgqueue migrated while this run waited for the migration lock: alembic
        # cannot place the revision it found then. Say what the first look would have said.
        current, after = _looked(dsn)
        if not current:
            raise
        return before, after
    return before, _looked(dsn)[1]


def _looked(dsn: str) -> tuple[bool, str | None]:
    """Whether the schema is current, or newer and serving this code, and its revision;
    :class:`SchemaError` when a later pgqueue migrated it and it does not serve this code
    (alembic, which cannot place that revision, would fail with a traceback)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists, revision, compatible_since = schema_state(conn)
    problem = schema_problem(exists, revision, compatible_since)
    if problem is None:
        return True, revision
    if exists and revision is not None and revision not in KNOWN_REVISIONS:
        raise SchemaError(problem)
    return False, revision if exists else None


def _upgrade(dsn: str) -> None:
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    raw = psycopg.connect(dsn)
    engine = create_engine("postgresql+psycopg://", creator=lambda: raw, poolclass=NullPool)
    try:
        with notices_logged(raw), engine.begin() as connection:
            command.upgrade(_config(connection=connection), "head")
    except DBAPIError as exc:  # the database refused: raise its own error, not SQLAlchemy's
        raise (exc.orig or exc) from None
    finally:
        engine.dispose()
        raw.close()


def migration_sql(since: str | None = None) -> str:
    """The SQL that creates pgqueue's schema from nothing, for teams with their own tooling;
    with ``since``, the SQL that upgrades a schema at that revision (``ValueError`` if this
    version knows no such revision)."""
    if since is not None and since not in KNOWN_REVISIONS:
        raise ValueError(
            f"unknown pgqueue schema revision {since!r}: use one of {', '.join(KNOWN_REVISIONS)}"
        )
    _quiet_alembic()
    from alembic import command

    out = io.StringIO()
    command.upgrade(_config(output_buffer=out), f"{since}:head" if since else "head", sql=True)
    return out.getvalue()


def schema_check(dsn: str) -> str | None:
    """``None`` when the schema is current, else a one-line explanation."""
    with psycopg.connect(normalize_dsn(dsn), autocommit=True) as conn:
        return schema_problem(*schema_state(conn))


def roles_sql() -> str:
    """The GRANTs for least-privilege worker and producer roles (never run automatically)."""
    from importlib import resources

    return resources.files("pgqueue.migrations").joinpath("sql/roles.sql").read_text("utf-8")
