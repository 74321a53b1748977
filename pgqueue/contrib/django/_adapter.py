"""Enqueue on Django's database connection: ``task.enqueue(django.db.connection, ...)``.

Accepts ``django.db.connection``, ``django.db.connections[alias]`` and Django cursors. This
module imports Django only once it is handed a Django object, so the ``pgqueue.connections``
entry point stays cheap (and harmless) in projects without Django.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue._connections import Adapter

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
    """The psycopg 3 connection of a Django ``DatabaseWrapper``, opened if need be."""
    wrapper.ensure_connection()
    raw = wrapper.connection
    if isinstance(raw, psycopg.Connection):
        # As Django's cursors do: an atomic block marked for rollback (an error caught inside
        # it, set_rollback(True)) would roll the job back silently when the block exits, and
        # another thread's connection would commit it outside this thread's atomic() block.
        wrapper.validate_no_broken_transaction()
        wrapper.validate_thread_sharing()
        return raw
    raise TypeError(
        f"pgqueue enqueues on psycopg 3, but Django's database {wrapper.alias!r} uses "
        f"{wrapper.vendor} with the {type(raw).__module__.split('.')[0]} driver: "
        "pip install 'psycopg[binary]' (Django prefers psycopg 3 when both are installed)"
    )


def sync_connection(obj: Any) -> psycopg.Connection[Any] | None:
    """The psycopg connection behind a Django connection, or ``None`` for other objects."""
    if not _is_django(obj):
        return None
    wrapper = _wrapper(obj)
    return None if wrapper is None else psycopg_connection(wrapper)


def async_connection(obj: Any) -> None:
    """Django's connections are synchronous: point the caller at ``enqueue()``."""
    if _is_django(obj) and _wrapper(obj) is not None:
        raise TypeError(
            "Django database connections are synchronous: call enqueue() (from async code, "
            "wrap it in asgiref's sync_to_async) instead of aenqueue()"
        )


adapter = Adapter("django", sync_connection, async_connection)
"""Registered through the ``pgqueue.connections`` entry point."""
