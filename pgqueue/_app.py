"""The application object: configuration and the registry of tasks."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import psycopg

from pgqueue import _store
from pgqueue._connections import (
    AsyncConnection,
    SyncConnection,
    async_cursor,
    dsn_variable,
    normalize_dsn,
    sync_cursor,
)
from pgqueue._errors import ConfigurationError, NoDatabaseError
from pgqueue._hooks import AppHooks, Callback, Middleware, ProcessWrap
from pgqueue._json import DEFAULT_MAX_PAYLOAD
from pgqueue._options import Executor, JobOptions, check_count, check_given_name, check_job_id
from pgqueue._periodic import DEFAULT_CATCH_UP, Periodic
from pgqueue._periodic import decorator as _periodic_decorator
from pgqueue._retention import retention_ages
from pgqueue._retry import RetryPolicy, check_delay
from pgqueue._schema import arequire_schema_once, require_schema_once
from pgqueue._task import Task

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pgqueue._job import Job
    from pgqueue._worker import Worker

P = ParamSpec("P")
R = TypeVar("R")
SetUp = TypeVar("SetUp", bound=Callable[[], ProcessWrap | None])


class PgQueue:
    """A pgqueue application: where its database is, and which tasks it knows.

    The DSN comes from ``dsn``, else ``PGQUEUE_DSN``, else ``DATABASE_URL``; it is only needed
    by workers and the CLI, since enqueueing uses the caller's own connection.
    ``redact`` rewrites every error message and traceback before the worker stores or logs it
    (see ``docs/how-to/security.md``).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        default_queue: str = "default",
        max_attempts: int = 3,
        retry: RetryPolicy | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        redact: Callable[[str], str] | None = None,
        retention: Mapping[str, float | timedelta | None] | None = None,
        unknown_task_delay: float | timedelta = 60.0,
    ) -> None:
        _check_app_arguments(dsn, redact, max_payload_bytes)
        # The least wait before a job of a task this app does not register runs again.
        self.unknown_task_delay = check_delay(unknown_task_delay, "unknown_task_delay")
        self._dsn = dsn
        self.redact: Callable[[str], str] = redact or _keep
        self.defaults = JobOptions(
            queue=default_queue, max_attempts=max_attempts, retry=retry or RetryPolicy()
        )
        self.max_payload_bytes = max_payload_bytes
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.periodics: dict[str, Periodic] = {}
        self.retention = retention_ages(retention)
        self.hooks = AppHooks()
        # (module, name) of a function each process-pool child calls first (Django's setup,
        # set by pgqueue.contrib.django), so that task modules can import what needs it.
        self._process_setup: tuple[str, str] | None = None
        # (module, name) of the function registered with @app.process_setup, called after it.
        self._user_process_setup: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"<pgqueue.PgQueue tasks={len(self.tasks)}>"

    @property
    def dsn(self) -> str:
        """The database this app's workers and CLI use."""
        return self._configured_dsn("pass PgQueue(dsn=...)")

    def _configured_dsn(self, how: str) -> str:
        """:attr:`dsn`, or ``ConfigurationError`` saying to do ``how`` (what gives a DSN where
        the caller is) or to set one of the variables read."""
        dsn = self._dsn or dsn_variable("PGQUEUE_DSN") or dsn_variable("DATABASE_URL")
        if not dsn:
            raise NoDatabaseError(
                f"no database configured: {how}, or set PGQUEUE_DSN or DATABASE_URL"
            )
        return normalize_dsn(dsn)

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new psycopg connection to :attr:`dsn` (the caller closes it)."""
        return psycopg.connect(self.dsn, **kwargs)

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        executor: Executor | None = None,
        store_result: bool | None = None,
        on_success: Callback | None = None,
        on_failure: Callback | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        executor: Executor | None = None,
        store_result: bool | None = None,
        on_success: Callback | None = None,
        on_failure: Callback | None = None,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue=..., ...)``.

        The name defaults to ``module.qualname``. ``executor`` says where the worker runs it:
        ``"auto"`` (coroutines on the event loop, plain functions in a thread), ``"async"``,
        ``"thread"`` or ``"process"`` (a process pool, for CPU-bound work).
        ``store_result=False`` discards return values. ``on_success`` / ``on_failure`` are
        called by the worker with a :class:`~pgqueue.JobEvent` when a job succeeds / fails
        for good (see docs/operations.md).
        """
        options = self.defaults.merge(
            queue=queue, priority=priority, max_attempts=max_attempts, timeout=timeout,
            retry=retry, executor=executor, store_result=store_result, on_success=on_success,
            on_failure=on_failure,
        )  # fmt: skip

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            if not callable(func):
                raise TypeError(f"app.task registers a function, got {func!r}")
            task_name = check_given_name(name or default_task_name(func))
            _check_executor(func, options.executor)
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise ValueError(f"a different function is already registered as {task_name!r}")
            task: Task[Any, Any] = Task(self, func, task_name, options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def periodic(
        self,
        expression: str,
        *,
        timezone: str = "UTC",
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        name: str | None = None,
        catch_up: float | timedelta = DEFAULT_CATCH_UP,
        overlap: bool = True,
        coalesce: bool = False,
    ) -> Callable[[Callable[P, R] | Task[P, R]], Task[P, R]]:
        """Enqueue the decorated function on every tick of a cron schedule.

        ``expression`` has 5 fields (minute hour day month weekday) or 6 with seconds last,
        read in ``timezone`` (IANA name). The function is registered as a task too (or pass a
        task). Each tick becomes exactly one job, however many workers run the scheduler; the
        job's ``meta`` holds ``{"periodic": name, "tick": "<ISO time, UTC>"}``. After downtime,
        missed ticks younger than ``catch_up`` (default 10 minutes) are enqueued, older ones
        skipped and logged; with ``coalesce=True`` only the latest of the missed ticks inside
        ``catch_up`` is enqueued, the others recorded without a job. ``name`` (default: the
        task's name) identifies the schedule in the database. With ``overlap=False`` a tick is
        skipped (and logged) while the job of an earlier tick of the schedule is queued or
        running. Raises ``ValueError`` at once for a bad expression, zone, queue or kwargs.
        """
        return _periodic_decorator(  # type: ignore[return-value]
            self, expression, timezone=timezone, kwargs=kwargs, queue=queue, name=name,
            catch_up=catch_up, overlap=overlap, coalesce=coalesce,
        )  # fmt: skip

    def get_task(self, name: str) -> Task[Any, Any] | None:
        """The task registered under exactly ``name``, or ``None``."""
        return self.tasks.get(name)

    def using(
        self,
        name: str,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        max_attempts: int | None = None,
        **options: Any,
    ) -> Task[..., Any]:
        """A task by name with options, for producers that do not import the task's code.

        A name registered here keeps its own options; another name gets the app's defaults.
        """
        task = self.tasks.get(name) or Task(self, None, check_given_name(name), self.defaults)
        return task.using(
            queue=queue, priority=priority, delay=delay, max_attempts=max_attempts, **options
        )

    def enqueue(self, conn: SyncConnection, name: str, /, *args: Any, **kwargs: Any) -> int:
        """Enqueue task ``name`` in the caller's transaction; returns the job id."""
        return self.using(name).enqueue(conn, *args, **kwargs)

    async def aenqueue(self, conn: AsyncConnection, name: str, /, *args: Any, **kwargs: Any) -> int:
        """Async twin of :meth:`enqueue`."""
        return await self.using(name).aenqueue(conn, *args, **kwargs)

    def cancel(self, conn: SyncConnection, job_id: int) -> str | None:
        """Cancel job ``job_id`` in the caller's transaction (never commits).

        A queued job ends ``cancelled`` at once: returns ``"cancelled"``. A running job is
        flagged and its worker stops it at its next heartbeat (a notification hastens it):
        returns ``"requested"``. A finished or unknown job is left alone: returns ``None``.
        """
        job_id = check_job_id(job_id)
        with sync_cursor(conn) as cur:
            require_schema_once(cur)  # once per connection: a call per request adds no read
            # A claim committing during the statement hides the row from both of its branches;
            # the second statement sees it running (under READ COMMITTED, the default).
            return _store.run(cur, _store.jobs_cancel(job_id)) or _store.run(
                cur, _store.jobs_cancel(job_id)
            )

    async def acancel(self, conn: AsyncConnection, job_id: int) -> str | None:
        """Async twin of :meth:`cancel`."""
        job_id = check_job_id(job_id)
        async with async_cursor(conn) as cur:
            await arequire_schema_once(cur)
            return await _store.arun(cur, _store.jobs_cancel(job_id)) or await _store.arun(
                cur, _store.jobs_cancel(job_id)
            )

    def worker(self, **options: Any) -> Worker:
        """A :class:`~pgqueue.Worker` for this app; see its parameters."""
        from pgqueue._worker import Worker

        return Worker(self, **options)

    def run_worker(self, **options: Any) -> None:
        """Run a worker in this thread until it is stopped (or, with ``burst=True``, idle)."""
        worker = self.worker(**options)
        runner = asyncio.Runner()
        try:
            runner.run(worker.run())
        finally:
            if worker.abandoned_coroutines():
                _close_leaving_abandoned(runner.get_loop())
            else:
                runner.close()

    # -- operations (issue 5) -----------------------------------------------------------------

    def middleware(self, fn: Middleware) -> Middleware:
        """Register ``async def fn(job, call_next)`` to run around every attempt (decorator)."""
        if not callable(fn):  # else every attempt of every job fails on it
            raise TypeError(f"middleware must be a function (job, call_next), got {fn!r}")
        # A new list: an attempt under way reads its list lazily, and must not run this one.
        self.hooks.middleware = [*self.hooks.middleware, fn]
        return fn

    def process_setup(self, fn: SetUp) -> SetUp:
        """Register ``fn()`` to run once in each process-pool child, before its first job
        (decorator; one per app): set up there what tasks need (logging, tracing, a client,
        a model). It may return a function making a context manager, which each call of a
        task in that child then runs in. If it raises, the job sent to that child fails with
        its error, and the child is retired (the next job's child tries again). ``fn`` must
        be a module-level function: the child imports it by name."""
        if self._user_process_setup is not None:
            module, name = self._user_process_setup
            raise ConfigurationError(
                f"this app already has a process set-up, {module}.{name}: one per app"
            )
        self._user_process_setup = importable_name(fn, "a process set-up")
        return fn

    def _process_setups(self) -> tuple[tuple[str, str], ...]:
        """What a process-pool child calls first: the framework's set-up, then the app's."""
        return tuple(s for s in (self._process_setup, self._user_process_setup) if s)

    def get_job(self, conn: SyncConnection, job_id: int) -> Job | None:
        """The job ``job_id`` (state, result, errors, attempts, times), or ``None``."""
        from pgqueue._ops import get_job

        return get_job(conn, job_id)

    async def aget_job(self, conn: AsyncConnection, job_id: int) -> Job | None:
        """Async twin of :meth:`get_job`."""
        from pgqueue._ops import aget_job

        return await aget_job(conn, job_id)

    def retry(self, conn: SyncConnection, job_id: int) -> None:
        """Put a failed or cancelled job back in its queue, in the caller's transaction."""
        from pgqueue._ops import retry_job

        retry_job(conn, job_id)

    async def wait(
        self,
        job_id: int,
        *,
        timeout: float | None = None,
        poll_interval: float = 5.0,
        listen: bool = True,
    ) -> Job:
        """Wait until job ``job_id`` has finished and return it; ``TimeoutError`` after
        ``timeout`` seconds. Woken by a completion notification; polls as a fallback.
        ``listen=False`` only polls, keeping nothing in the session: for a :attr:`dsn`
        that goes through a transaction-mode pooler."""
        from pgqueue._wait import wait

        return await wait(self.dsn, job_id, timeout, poll_interval, listen)

    def wait_sync(
        self,
        job_id: int,
        *,
        timeout: float | None = None,
        poll_interval: float = 5.0,
        listen: bool = True,
    ) -> Job:
        """Blocking twin of :meth:`wait`."""
        from pgqueue._wait import wait_sync

        return wait_sync(self.dsn, job_id, timeout, poll_interval, listen)


def _keep(text: str) -> str:
    return text


def _check_app_arguments(dsn: object, redact: object, max_payload_bytes: object) -> None:
    # A redact that cannot be called would only fail in the worker, on a task's first error.
    if dsn is not None and not isinstance(dsn, str):
        raise ValueError(f"dsn must be a string (or None), got {dsn!r}")
    if redact is not None and not callable(redact):
        raise ValueError(f"redact must be a function from str to str (or None), got {redact!r}")
    check_count(max_payload_bytes, "max_payload_bytes", 1)


def default_task_name(fn: Callable[..., Any]) -> str:
    """``module.qualname``; under ``python -m pkg.mod`` the module's real name, not __main__."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)):
        raise ValueError(f"{fn!r} has no module and qualified name: give it one with name=...")
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return f"{module}.{qualname}"


def importable_name(fn: Callable[..., Any], what: str) -> tuple[str, str]:
    """The (module, name) another process imports ``fn`` by; ``TypeError`` if it is no
    plain function, ``ConfigurationError`` if it cannot be imported by name: a lambda, or a
    function defined inside another. One in the main script is ``__main__``'s, never its
    ``-m`` name: a pool's child runs the script again and finds it there as ``__main__``,
    the copy its ``__main__`` tasks run in, when its worker runs from that script (one that
    only enqueues never calls it). A main module no child runs again is refused too."""
    import inspect

    if not inspect.isfunction(fn) or inspect.iscoroutinefunction(fn):
        raise TypeError(f"{what} must be a plain (not async) function, got {fn!r}")
    module, name = fn.__module__, fn.__qualname__
    if name != fn.__name__ or name == "<lambda>":
        why = "is not"
    elif module == "__main__" and not _main_runs_again():
        why = "is in a main module which a child process does not run again (python -m pkg, -c)"
    else:
        return module, name
    raise ConfigurationError(
        f"{what} must be defined at the top level of a module the worker imports (its"
        f" process imports it by name), but {module}.{name} {why}: put it in the module of"
        " the app (--app) or one it imports"
    )


def _main_runs_again() -> bool:
    """Whether multiprocessing's spawn and forkserver run the main module again in a child
    (as ``__mp_main__``): a script, or a module run with ``-m``; not a package's
    ``__main__`` (``python -m pkg``, ``python pkg``), nor ``python -c`` or a REPL."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return spec.name != "__main__" and not spec.name.endswith(".__main__")
    return getattr(main, "__file__", None) is not None


def _check_executor(fn: Callable[..., Any], executor: Executor) -> None:
    import inspect

    is_coro = inspect.iscoroutinefunction(fn)
    qualname = getattr(fn, "__qualname__", repr(fn))
    if executor == "async" and not is_coro:
        raise ValueError(f"{qualname} is not a coroutine function: executor='async' needs one")
    if executor in ("thread", "process") and is_coro:
        raise ValueError(f"{qualname} is a coroutine function: it runs on the event loop")
    if executor == "process" and "<locals>" in qualname:
        raise ValueError(
            f"{qualname} is defined inside a function: process tasks must be importable"
        )


PgQueue.__module__ = "pgqueue"


def _close_leaving_abandoned(loop: asyncio.AbstractEventLoop) -> None:
    """Close ``loop`` as ``asyncio.run`` does, but without cancelling and awaiting its tasks:
    the coroutines a worker abandoned at shutdown ignore their cancellation, and would be
    waited for forever (their jobs are already back in the queue). They stop where they are."""
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
