"""The ``PGQUEUE = {...}`` Django setting, and the pgqueue app and DSN derived from it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from psycopg.conninfo import make_conninfo

from pgqueue._app import PgQueue
from pgqueue._connections import normalize_dsn
from pgqueue._task import Task
from pgqueue.contrib.django import _orm_thread

log = logging.getLogger("pgqueue.worker")

DEFAULTS: dict[str, Any] = {
    "DATABASE": "default",  # the Django database alias that holds pgqueue's schema
    "APP": None,  # dotted path of your own PgQueue; default: one made from these settings
    "QUEUE": "default",  # default queue of the app made here
    "MAX_ATTEMPTS": 3,  # default attempts of the app made here
    "UNKNOWN_TASK_DELAY": 60.0,  # least wait before a job of an unknown task runs again
    "DSN": None,  # what workers and the CLI connect to; default: the DATABASE's settings
    "AUTODISCOVER": "tasks",  # module imported from every installed app (None: none)
    "TASK_MODULES": [],  # more modules to import at start-up, so their tasks are registered
}

# Django's connection parameters that are not libpq's (psycopg objects and Django options).
_NOT_LIBPQ = {"context", "cursor_factory", "prepare_threshold"}


def settings() -> dict[str, Any]:
    """``PGQUEUE`` merged over the defaults; unknown keys are an ``ImproperlyConfigured``."""
    from django.conf import settings as django_settings
    from django.core.exceptions import ImproperlyConfigured

    given = getattr(django_settings, "PGQUEUE", {}) or {}
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f"PGQUEUE must be a dict of settings, got {given!r}")
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ImproperlyConfigured(
            f"unknown PGQUEUE setting(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(DEFAULTS)}"
        )
    merged = {**DEFAULTS, **given}
    _check_modules(merged["TASK_MODULES"], merged["AUTODISCOVER"])
    return merged


def _check_modules(modules: Any, autodiscover: Any) -> None:
    """A string where a list belongs would be imported character by character."""
    from django.core.exceptions import ImproperlyConfigured

    if not isinstance(modules, list | tuple) or not all(isinstance(m, str) for m in modules):
        raise ImproperlyConfigured(
            f"PGQUEUE['TASK_MODULES'] must be a list of module names, got {modules!r}"
        )
    if autodiscover is not None and not isinstance(autodiscover, str):
        raise ImproperlyConfigured(
            f"PGQUEUE['AUTODISCOVER'] must be a module name (or None), got {autodiscover!r}"
        )


def database_alias() -> str:
    """The Django database alias pgqueue uses."""
    alias: str = settings()["DATABASE"]
    return alias


def connection() -> Any:
    """Django's connection to pgqueue's database: pass it to ``enqueue`` inside ``atomic()``."""
    from django.db import connections

    return connections[database_alias()]


def dsn() -> str:
    """The libpq DSN workers and the CLI use: ``PGQUEUE["DSN"]``, read as every DSN is (a
    ``postgresql+psycopg://`` URL too), else the database's settings."""
    configured: str | None = settings()["DSN"]
    if configured:
        return normalize_dsn(configured)
    params = connection().get_connection_params()
    usable = {
        key: value
        for key, value in params.items()
        if key not in _NOT_LIBPQ and isinstance(value, str | int) and value != ""
    }
    return make_conninfo("", **usable)


@functools.cache
def get_app() -> PgQueue:
    """The PgQueue Django code registers tasks on and workers run (``PGQUEUE["APP"]``)."""
    from django.utils.module_loading import import_string

    config = settings()
    if config["APP"]:
        app = import_string(config["APP"])
        if not isinstance(app, PgQueue):
            raise TypeError(f"PGQUEUE['APP'] = {config['APP']!r} is not a pgqueue.PgQueue")
        app._process_setup = app._process_setup or _PROCESS_SETUP
        return app
    return DjangoPgQueue(
        default_queue=config["QUEUE"],
        max_attempts=config["MAX_ATTEMPTS"],
        unknown_task_delay=config["UNKNOWN_TASK_DELAY"],
    )


def setup_process() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """Set Django up in a process-pool child, before it imports a task's module: a tasks.py
    that imports its models failed there with "Apps aren't loaded yet", and so did every job
    of an ``executor="process"`` task (or a crashed job isolated in a child). Returns how the
    child makes each call: as a worker thread does, between two releases of connections
    (a child lives for many jobs, and without them its connections never aged out), in
    asgiref's thread too once it used one (an async task's ORM calls). It runs before the
    app's own ``process_setup``, which can then use Django."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    _orm_thread.watch()
    return _released_in_a_child


@contextlib.contextmanager
def _released() -> Iterator[None]:
    release_connections()
    try:
        yield
    finally:
        release_connections()


@contextlib.contextmanager
def _released_in_a_child() -> Iterator[None]:
    with _released():
        _release_orm_thread()
        try:
            yield
        finally:
            _release_orm_thread()


def _release_orm_thread() -> None:
    """In a child, asgiref's one thread, where the ORM calls of an async task (isolated after
    a crash) ran: released too, once any connection was opened there, before the call and
    after it, queued there as in the worker, not waited for: behind any call a task left
    running there, and ahead of the next task's ORM calls (a sync task, which uses none of
    its connections, waited behind such a call)."""
    if _orm_thread.touched():
        _queue(_release_recorded)


def _call_released(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    with _released():
        return fn(*args, **kwargs)


_PROCESS_SETUP = (__name__, "setup_process")


def release_connections() -> None:
    """Close Django connections that are broken or past ``CONN_MAX_AGE``, as Django does
    around each request; connections inside an ``atomic()`` block are left alone."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()
    close_lost_connections()


def close_lost_connections(**signal: Any) -> None:
    """Close Django connections that psycopg found lost, outside ``atomic()`` blocks: one
    that failed a pgqueue statement (an enqueue) is not marked failed for Django, which kept
    it past the request, and the next request's first query failed on it too. Connected to
    ``request_started`` and ``request_finished``, as Django's ``close_old_connections``."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        if raw is not None and getattr(raw, "closed", False) and not conn.in_atomic_block:
            conn.close()


def _hygienic(fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        return _ahygienic(fn)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return _call_released(fn, args, kwargs)

    return run


def _ahygienic(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An async task's ORM calls (``acount()``, ``sync_to_async``) run in asgiref's one
    thread for sync code: its connections are released there, before and after the task, as
    Django's ASGI handler releases them around each request, unless ``_orm_thread`` finds
    that such a release would leave them as they are.

    That thread runs its calls one at a time, first come first served: a release queued
    there before the task starts runs before any ORM call of the task, and after any call
    still running or queued there (another task's, or one a task abandoned when it timed
    out, or caught its own timeout): it is queued, not awaited (a hop there and back costs
    more than a no-op task). The release after a task is queued too, and the task counted
    out once it ran, or once every call queued before it ran when it is needless: until
    then the next task queues a release. Waiting for it held a cancellation (the timeout,
    the worker's stop) until the task's own ORM call returned, and turned a task done in
    time into a timed-out one. When the task's ORM calls go to another thread (an outer
    ``async_to_sync``, a ``ThreadSensitiveContext``) the release there is awaited before
    it and started after it."""
    from asgiref.sync import sync_to_async

    _orm_thread.watch()
    release = sync_to_async(release_connections, thread_sensitive=True)

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        shared = _orm_thread.shared()
        alone = _orm_thread.start()
        try:
            if not shared:
                await release()
            elif not (alone and _orm_thread.needless()):
                _queue(_release_recorded)
            result = await fn(*args, **kwargs)
        except BaseException:
            _release_after(shared, release, needed=True)
            raise
        _release_after(shared, release, needed=not (shared and _orm_thread.needless()))
        return result

    return run


def _release_recorded() -> None:
    release_connections()
    _orm_thread.record()


def _release_recorded_then_end() -> None:
    try:
        _release_recorded()
    finally:
        _orm_thread.end()


def _queue(work: Callable[[], None]) -> None:
    """Queue ``work`` in asgiref's one thread, behind every call queued there so far and
    ahead of every later one, not awaited; a failure of it is logged."""
    from asgiref.sync import SyncToAsync

    try:
        SyncToAsync.single_thread_executor.submit(work).add_done_callback(_released_after)
    except RuntimeError as exc:  # that executor shut down: a task's count stays up
        log.error(
            "the release of Django connections around an async task could not be queued "
            "in asgiref's thread (its executor was shut down); the task's ORM calls cannot "
            "run there either",
            exc_info=exc,
            extra={"action": "release_error"},
        )


def _release_after(shared: bool, release: Callable[[], Awaitable[None]], needed: bool) -> None:
    """After a task: release (if ``needed``), then count the task out."""
    if shared:
        _queue(_release_recorded_then_end if needed else _orm_thread.end)
    else:
        _releasing.add(after := asyncio.ensure_future(release()))
        after.add_done_callback(_released_after)


_releasing: set[asyncio.Future[None]] = set()  # strong references: the loop keeps weak ones


def _released_after(after: asyncio.Future[None] | concurrent.futures.Future[None]) -> None:
    if isinstance(after, asyncio.Future):
        _releasing.discard(after)
        _orm_thread.end()
    if not after.cancelled() and after.exception() is not None:
        log.error(
            "the release of Django connections around an async task failed",
            exc_info=after.exception(),
            extra={"action": "release_error"},
        )


class DjangoPgQueue(PgQueue):
    """A PgQueue whose DSN, unless given, is read from Django's settings when needed, and
    whose worker threads treat Django's connections as Django treats them per request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wrapped: dict[str, Task[Any, Any]] = {}
        self._process_setup = _PROCESS_SETUP

    def get_task(self, name: str) -> Task[Any, Any] | None:
        """The task ``name``; its function is wrapped to release Django connections."""
        task = super().get_task(name)
        if task is None or task.fn is None:
            return task
        cached = self._wrapped.get(name)
        if cached is None or cached.fn.__wrapped__ is not task.fn:  # type: ignore[union-attr]
            cached = self._wrapped[name] = Task(self, _hygienic(task.fn), name, task.options)
        return cached

    @property
    def dsn(self) -> str:
        """``PGQUEUE["DSN"]``, else the connection settings of ``PGQUEUE["DATABASE"]``, read
        as :attr:`PgQueue.dsn` reads a DSN (a ``postgresql+psycopg://`` URL too)."""
        return normalize_dsn(self._dsn or dsn())
