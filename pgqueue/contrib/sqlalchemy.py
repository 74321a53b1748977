"""Enqueue on SQLAlchemy objects: ``task.enqueue(session, ...)``, ``await task.aenqueue(...)``.

Accepted: ``Session``, ``Connection``, ``AsyncSession``, ``AsyncConnection`` and the scoped
session registries (``scoped_session``, ``async_scoped_session``) on the psycopg (3) driver
(``postgresql+psycopg://``). The job joins the transaction in progress, starting one the way
SQLAlchemy's autobegin would, so it commits or rolls back with the session's writes.

Nothing to import: pgqueue finds this adapter through its ``pgqueue.connections`` entry point.
SQLAlchemy itself is imported only once a SQLAlchemy object is handed over, so projects that
enqueue on other connections (Django's, psycopg's) never pay for the import.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import psycopg

from pgqueue._connections import Adapter, ConnectionKindError

__all__ = ["adapter"]


def _is_sqlalchemy(obj: Any) -> bool:
    """Whether ``obj``'s class, or a class it derives from (SQLModel's ``Session``, a
    project's own), is SQLAlchemy's: told without importing SQLAlchemy."""
    return any(cls.__module__.startswith("sqlalchemy.") for cls in type(obj).__mro__)


def _driver_connection(conn: Any, wanted: type) -> Any:
    if not conn.in_transaction():
        conn.begin()  # what SQLAlchemy's autobegin does on the first execute
    raw = conn.connection.driver_connection
    if isinstance(raw, psycopg.AsyncConnection) and wanted is psycopg.Connection:
        # A Session or Connection that AsyncSession.run_sync (or alembic's async template)
        # hands over: its driver is postgresql+psycopg too, but its connection is async.
        raise TypeError(
            "this SQLAlchemy object runs on an async engine (inside run_sync, say): enqueue"
            " on its AsyncSession or AsyncConnection with aenqueue() instead"
        )
    if not isinstance(raw, wanted):
        raise TypeError(
            f"pgqueue enqueues on psycopg 3, but this SQLAlchemy engine uses the "
            f"{conn.dialect.name}+{conn.dialect.driver} driver: use a postgresql+psycopg:// URL"
        )
    return raw


def _bind_for_writes(session: Any) -> Any:
    """The bind a ``get_bind()`` of the project's own (a read/write split) gives the session's
    writes, asked as a flush asks it (``_flushing`` is what SQLAlchemy's routing recipe reads)
    and for an INSERT into ``pgqueue.jobs``: asked as ``connection()`` asks, with nothing,
    such a session routes the job to a read replica, apart from the writes it should join."""
    from sqlalchemy import insert, table

    flushing = session._flushing  # True already when enqueued from a flush event
    session._flushing = True
    try:
        # A clause for routing only: never executed (the store writes the job).
        return session.get_bind(clause=insert(table("jobs", schema="pgqueue")))
    finally:
        session._flushing = flushing


def _refuse_sharded(session: Any) -> None:
    """Raise for a ``ShardedSession``, whose ``get_bind()`` fails on a bare AssertionError for
    a job: it chooses a shard by mapper or instance, and a job has neither."""
    from sqlalchemy.ext.horizontal_shard import ShardedSession

    if isinstance(session, ShardedSession):
        raise TypeError(
            "a ShardedSession chooses a shard by mapper or instance, and a job has neither:"
            " enqueue on the connection of the shard holding pgqueue's schema, e.g."
            " task.enqueue(session.connection(bind_arguments={'shard_id': 'east'}), ...)"
            " (await it for an AsyncSession)"
        )


def _bind_arguments(session: Any) -> dict[str, Any] | None:
    """How to ask ``session`` for its connection: as is, unless it routes its statements with
    a ``get_bind()`` of its own (see :func:`_bind_for_writes`) that finds a bind for the job,
    or has no ``bind=`` but per-mapper or per-table ``binds``, which ``connection()`` alone
    cannot choose from. All on one engine (or connection), that one; on several, pgqueue
    cannot tell which database holds its schema, and says how to hand over the right one."""
    from sqlalchemy.exc import UnboundExecutionError
    from sqlalchemy.orm import Session

    _refuse_sharded(session)
    if type(session).get_bind is not Session.get_bind:
        try:
            return {"bind": _bind_for_writes(session)}
        except UnboundExecutionError:
            pass  # a get_bind() deferring to Session's, which has no bind for pgqueue's INSERT
    if session.bind is not None:
        return None
    # Session.binds is public from SQLAlchemy 2.1; 2.0 keeps the same mapping privately.
    binds = getattr(session, "binds", None) or vars(session).get("_Session__binds") or {}
    targets = set(binds.values())
    if len(targets) > 1:
        raise TypeError(
            f"this {type(session).__name__} has no bind= and its binds are {len(targets)}"
            " engines: pgqueue cannot tell which database holds its schema. Enqueue on the"
            " connection of that database, e.g. task.enqueue(session.connection("
            "bind_arguments={'mapper': SomeModel}), ...) (await it for an AsyncSession)"
        )
    return {"bind": targets.pop()} if targets else None


def _factories() -> tuple[type, ...]:
    """Engines and session factories, sync and async: what users hand over for the session
    or connection they make, though they hold no transaction for the job to join."""
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker

    try:
        from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
    except ImportError:  # see _async_types
        return (Engine, sessionmaker)
    return (Engine, sessionmaker, AsyncEngine, async_sessionmaker)


def _refuse_factory(obj: Any) -> None:
    """Raise for one of :func:`_factories`, rather than leave it to other adapters."""
    if isinstance(obj, _factories()):
        raise TypeError(
            f"cannot enqueue on a {type(obj).__name__}: it has no transaction for the job to"
            " join. Pass a Session or a Connection (engine.begin(), engine.connect()), or their"
            " async twins to aenqueue()"
        )


def _async_types() -> tuple[type, ...]:
    """SQLAlchemy's async connection types; none where its asyncio extension does not import
    (SQLAlchemy 2.1 without greenlet), since then no object of them can exist."""
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session
    except ImportError:
        return ()
    return (AsyncSession, AsyncConnection, async_scoped_session)


def sync_connection(obj: Any) -> psycopg.Connection[Any] | None:
    """The psycopg connection behind a ``Session`` or ``Connection``, in its transaction."""
    if not _is_sqlalchemy(obj):
        return None
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session, scoped_session

    if isinstance(obj, _async_types()):
        raise ConnectionKindError(
            "this is an async SQLAlchemy object: use aenqueue() instead of enqueue()"
        )
    if isinstance(obj, scoped_session):  # Flask-SQLAlchemy's db.session, among others
        obj = obj()  # this scope's Session
    if isinstance(obj, Session):
        obj = obj.connection(bind_arguments=_bind_arguments(obj))
    if not isinstance(obj, Connection):
        _refuse_factory(obj)
        return None
    found: psycopg.Connection[Any] = _driver_connection(obj, psycopg.Connection)
    return found


async def _async_driver_connection(obj: Any) -> Any:
    from sqlalchemy.ext.asyncio import AsyncSession

    if isinstance(obj, AsyncSession):
        conn = await obj.connection(bind_arguments=_bind_arguments(obj.sync_session))
    else:
        conn = obj
    if not conn.in_transaction():
        await conn.begin()
    return _driver_connection(conn.sync_connection, psycopg.AsyncConnection)


def async_connection(obj: Any) -> Awaitable[psycopg.AsyncConnection[Any]] | None:
    """An awaitable of the psycopg connection behind an ``AsyncSession``/``AsyncConnection``."""
    if not _is_sqlalchemy(obj):
        return None
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session
    from sqlalchemy.orm import Session, scoped_session

    if isinstance(obj, Session | Connection | scoped_session):
        raise ConnectionKindError(
            "this is a sync SQLAlchemy object: use enqueue() instead of aenqueue()"
        )
    if isinstance(obj, async_scoped_session):
        obj = obj()  # this scope's AsyncSession
    if not isinstance(obj, AsyncSession | AsyncConnection):
        _refuse_factory(obj)
        return None
    return _async_driver_connection(obj)


adapter = Adapter("sqlalchemy", sync_connection, async_connection)
"""Registered through the ``pgqueue.connections`` entry point."""
