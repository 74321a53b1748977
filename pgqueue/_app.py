"""The application object: configuration and the registry of tasks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import psycopg

from pgqueue._connections import AsyncConnection, SyncConnection
from pgqueue._errors import ConfigurationError
from pgqueue._json import DEFAULT_MAX_PAYLOAD
from pgqueue._options import Executor, JobOptions, check_task_name
from pgqueue._retry import RetryPolicy
from pgqueue._task import Task

if TYPE_CHECKING:
    from pgqueue._worker import Worker

P = ParamSpec("P")
R = TypeVar("R")


def normalize_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (``postgresql+psycopg://``) as libpq DSNs too."""
    scheme, sep, rest = dsn.partition("://")
    if sep and scheme.startswith(("postgresql+", "postgres+")):
        return f"postgresql://{rest}"
    return dsn


class PgQueue:
    """A pgqueue application: where its database is, and which tasks it knows.

    The DSN comes from ``dsn``, else ``PGQUEUE_DSN``, else ``DATABASE_URL``; it is only needed
    by workers and the CLI, since enqueueing uses the caller's own connection.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        default_queue: str = "default",
        max_attempts: int = 3,
        retry: RetryPolicy | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._dsn = dsn
        self.defaults = JobOptions(
            queue=default_queue, max_attempts=max_attempts, retry=retry or RetryPolicy()
        )
        self.max_payload_bytes = max_payload_bytes
        self.tasks: dict[str, Task[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"<pgqueue.PgQueue tasks={len(self.tasks)}>"

    @property
    def dsn(self) -> str:
        """The database this app's workers and CLI use."""
        dsn = self._dsn or os.environ.get("PGQUEUE_DSN") or os.environ.get("DATABASE_URL")
        if not dsn:
            raise ConfigurationError(
                "no database configured: pass PgQueue(dsn=...) or set PGQUEUE_DSN"
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
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        executor: Executor | None = None,
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
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        executor: Executor | None = None,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue=..., ...)``.

        The name defaults to ``module.qualname``. ``executor`` says where the worker runs it:
        ``"auto"`` (coroutines on the event loop, plain functions in a thread), ``"async"``,
        ``"thread"`` or ``"process"`` (a process pool, for CPU-bound work).
        """
        options = self.defaults.merge(
            queue=queue, priority=priority, max_attempts=max_attempts, timeout=timeout,
            retry=retry, executor=executor,
        )  # fmt: skip

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = check_task_name(name or default_task_name(func))
            _check_executor(func, options.executor)
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise ValueError(f"a different function is already registered as {task_name!r}")
            task: Task[Any, Any] = Task(self, func, task_name, options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

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
        task = self.tasks.get(name) or Task(self, None, check_task_name(name), self.defaults)
        return task.using(
            queue=queue, priority=priority, delay=delay, max_attempts=max_attempts, **options
        )

    def enqueue(self, conn: SyncConnection, name: str, /, *args: Any, **kwargs: Any) -> int:
        """Enqueue task ``name`` in the caller's transaction; returns the job id."""
        return self.using(name).enqueue(conn, *args, **kwargs)

    async def aenqueue(self, conn: AsyncConnection, name: str, /, *args: Any, **kwargs: Any) -> int:
        """Async twin of :meth:`enqueue`."""
        return await self.using(name).aenqueue(conn, *args, **kwargs)

    def worker(self, **options: Any) -> Worker:
        """A :class:`~pgqueue.Worker` for this app; see its parameters."""
        from pgqueue._worker import Worker

        return Worker(self, **options)

    def run_worker(self, **options: Any) -> None:
        """Run a worker in this thread until it is stopped (or, with ``burst=True``, idle)."""
        import asyncio

        asyncio.run(self.worker(**options).run())


def default_task_name(fn: Callable[..., Any]) -> str:
    """``module.qualname``; under ``python -m pkg.mod`` the module's real name, not __main__."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return f"{module}.{fn.__qualname__}"


def _check_executor(fn: Callable[..., Any], executor: Executor) -> None:
    import inspect

    is_coro = inspect.iscoroutinefunction(fn)
    if executor == "async" and not is_coro:
        raise ValueError(
            f"{fn.__qualname__} is not a coroutine function: executor='async' needs one"
        )
    if executor in ("thread", "process") and is_coro:
        raise ValueError(f"{fn.__qualname__} is a coroutine function: it runs on the event loop")
    if executor == "process" and "<locals>" in fn.__qualname__:
        raise ValueError(
            f"{fn.__qualname__} is defined inside a function: process tasks must be importable"
        )


PgQueue.__module__ = "pgqueue"
