"""Enqueue on Django's database connection: ``task.enqueue(django.db.connection, ...)``.

Accepts ``django.db.connection``, ``django.db.connections[alias]`` and Django cursors. This
module imports Django only once it is handed a Django object, so the ``pgqueue.connections``
entry point stays cheap (and harmless) in projects without Django.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue._connections import Adapter, ConnectionKindError

__all__ = ["adapter", "psycopg_connection"]


def _is_django(obj: Any) -> bool:
    """Whether ``obj``'s class, or a class it derives from (a project's own ``ENGINE``, such
    as django-tenants'), is Django's: told without importing Django."""
    return any(cls.__module__.startswith("django.") for cls in type(obj).__mro__)


def _wrapper(obj: Any) -> Any:
    """The ``DatabaseWrapper`` behind a connection proxy, wrapper or cursor, else ``None``."""
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper
    from django.utils.connection import ConnectionProxy

    if isinstance(obj, CursorWrapper):
        return obj.db
    if isinstance(obj, BaseDatabaseWrapper):
        return obj
    if isinstance(obj, ConnectionProxy):  # django.db.connection (and cache, which is no database)
        return _wrapper(obj.__dict__["_connections"][obj.__dict__["_alias"]])
    return None


def psycopg_connection(wrapper: Any) -> psycopg.Connection[Any]:
    """The psycopg 3 connection of a Django ``DatabaseWrapper``, opened if need be, as
    Django's cursors open it (``CONN_HEALTH_CHECKS`` included)."""
    wrapper.close_if_health_check_failed()
    wrapper.ensure_connection()
    raw = wrapper.connection
    if isinstance(raw, psycopg.Connection):
        # As Django's cursors do: an atomic block marked for rollback (an error caught inside
        # it, set_rollback(True)) would roll the job back silently when the block exits, and
        # another thread's connection would commit it outside this thread's atomic() block.
        wrapper.validate_no_broken_transaction()
        wrapper.validate_thread_sharing()
        return _replaced_if_lost(wrapper, raw)
    raise TypeError(
        f"pgqueue enqueues on psycopg 3, but Django's database {wrapper.alias!r} uses "
        f"{wrapper.vendor} with the {type(raw).__module__.split('.')[0]} driver: "
        "pip install 'psycopg[binary]' (Django prefers psycopg 3 when both are installed)"
    )


def _replaced_if_lost(wrapper: Any, raw: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A connection psycopg found lost (the server restarted, failed over, ended an idle
    session) is replaced outside a transaction. Its error, raised by pgqueue's statements on
    the raw connection, never set Django's ``errors_occurred``: ``close_old_connections()``
    and the worker's release kept it, and with a persistent ``CONN_MAX_AGE`` every enqueue,
    and every Django task's start in that worker thread, failed on it until it aged out.

    Not inside a transaction, ``atomic()`` or ``set_autocommit(False)``: its writes are lost
    with the connection, and a job enqueued on a new one would commit without them. Nor once
    a Django query failed on it (``errors_occurred``): Django keeps it failing until the
    request's end, as a transaction it does not know of (a raw ``BEGIN``) needs."""
    if not raw.closed or wrapper.in_atomic_block or not wrapper.autocommit:
        return raw  # the transaction is lost: psycopg's error says so
    if wrapper.errors_occurred:
        return raw  # close_old_connections() replaces it, at the request's end
    wrapper.close()
    wrapper.ensure_connection()
    fresh: psycopg.Connection[Any] = wrapper.connection
    return fresh


def sync_connection(obj: Any) -> psycopg.Connection[Any] | None:
    """The psycopg connection behind a Django connection, or ``None`` for other objects."""
    if not _is_django(obj):
        return None
    wrapper = _wrapper(obj)
    return None if wrapper is None else psycopg_connection(wrapper)


def async_connection(obj: Any) -> None:
    """Django's connections are synchronous: point the caller at ``enqueue()``."""
    if _is_django(obj) and _wrapper(obj) is not None:
        raise ConnectionKindError(
            "Django database connections are synchronous: call enqueue() (from async code, "
            "wrap it in asgiref's sync_to_async) instead of aenqueue()"
        )


adapter = Adapter("django", sync_connection, async_connection)
"""Registered through the ``pgqueue.connections`` entry point."""
