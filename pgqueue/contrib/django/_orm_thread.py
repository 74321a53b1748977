"""asgiref's one thread for sync code, where async tasks' ORM calls run, and what the last
release of Django connections there left, so that an async task has a release queued there
only when it would do something.

That thread runs its calls one at a time, first come first served: a release queued there
runs after every call queued before it and before every call queued after it, so it is not
waited for. It is skipped when, read from the event loop, the release could only leave every
connection as it is: that thread's last release has ended, no other async task is counted
(running, or with calls of its own still running or queued there), none of its connections
was opened since (``connection_created``), and each one that release kept open is still in
``atomic()``, or clean (no ``errors_occurred``, its autocommit restored, not lost to
psycopg), and not yet past ``CONN_MAX_AGE``. What the release would still do, mark it for a
health check (``CONN_HEALTH_CHECKS``) at its next use, is done here."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any


class _Ledger:
    """What the last release in asgiref's one thread left: written there, read on loops."""

    ident: int | None = None  # that thread's, once a release ran there
    kept: tuple[Any, ...] = ()  # the Django connections it left open
    opened = False  # a connection was opened in that thread since
    busy = 0  # async tasks started and not yet counted out by end() (every loop's)


_ledger = _Ledger()
_lock = threading.Lock()  # busy is counted by every loop of the process


def record() -> None:
    """In asgiref's thread, after a release there: the connections it kept open."""
    from django.db import connections

    _ledger.kept = tuple(c for c in connections.all(initialized_only=True) if c.connection)
    _ledger.ident = threading.get_ident()
    _ledger.opened = False  # last: a loop that reads it False reads the kept connections too


def note_opened(connection: Any = None, **signal: Any) -> None:
    """``connection_created`` receiver: a connection opened in asgiref's thread must be
    released there (after a task that opened it with ``CONN_MAX_AGE`` 0, say). Until a
    release ran there, that thread is any but the main one."""
    ident = _ledger.ident
    if threading.get_ident() == ident or (
        ident is None and threading.current_thread() is not threading.main_thread()
    ):
        _ledger.opened = True


def touched() -> bool:
    """Whether asgiref's thread may hold a Django connection (one was opened there)."""
    return _ledger.ident is not None or _ledger.opened


def watch() -> None:
    """Have ``note_opened`` told of every connection Django opens (once is enough)."""
    from django.db.backends.signals import connection_created

    connection_created.connect(note_opened, dispatch_uid="pgqueue.contrib.django.note_opened")


def shared() -> bool:
    """Whether the calling task's thread-sensitive calls go to asgiref's one thread, which the
    ledger describes: not to the thread of an outer ``async_to_sync`` or of a
    ``ThreadSensitiveContext`` (read as asgiref chooses; anything unknown says no), nor to
    an executor of several threads an app put in its place (not one first-come-first-served
    thread, whose connections the ledger records)."""
    try:
        from asgiref.sync import AsyncToSync, SyncToAsync

        return (
            getattr(SyncToAsync.single_thread_executor, "_max_workers", None) == 1
            and getattr(AsyncToSync.executors, "current", None) is None
            and SyncToAsync.thread_sensitive_context.get(None) is None
            and asyncio.get_running_loop() not in AsyncToSync.loop_thread_executors
        )
    except AttributeError:  # another asgiref: hop every time
        return False


def start() -> bool:
    """Count a task in; whether no other one was counted (none could be using the thread)."""
    with _lock:
        _ledger.busy += 1
        return _ledger.busy == 1


def end() -> None:
    """Count a task out, in asgiref's thread once every call queued there before the task
    ended ran (then the release after it, when needed), or on a loop once that release ran."""
    with _lock:
        _ledger.busy -= 1


def needless() -> bool:
    """Whether a release in asgiref's thread would now leave every connection as it is."""
    if _ledger.ident is None or _ledger.opened:
        return False
    return all(_settled(conn) for conn in _ledger.kept)


def _settled(conn: Any) -> bool:
    """Whether ``release_connections`` would leave ``conn`` open and as it is; if so, it is
    marked for a health check at its next use, as that release marks it."""
    raw = conn.connection
    if raw is None or conn.in_atomic_block:
        return True
    if conn.errors_occurred or conn.autocommit != conn.settings_dict["AUTOCOMMIT"]:
        return False
    if getattr(raw, "closed", False):
        return False
    if conn.close_at is not None and time.monotonic() >= conn.close_at:
        return False
    conn.health_check_done = False
    return True
