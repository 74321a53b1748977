"""Eager mode: enqueueing runs the task inline and records the call; no database needed."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pgqueue import _json
from pgqueue._app import PgQueue
from pgqueue._errors import UnknownTaskError
from pgqueue._task import Task
from pgqueue._worker._context import JobContext, _current


@dataclass
class EagerJob:
    """One call made in eager mode: what was enqueued and how it ended."""

    id: int
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any = None
    error: BaseException | None = None


@dataclass
class EagerLog:
    """The calls made while :func:`eager` is active, oldest first."""

    propagate: bool = True
    jobs: list[EagerJob] = field(default_factory=list)

    def of(self, task: Task[Any, Any] | str) -> list[EagerJob]:
        """The calls of one task (a Task or its name)."""
        name = task if isinstance(task, str) else task.name
        return [j for j in self.jobs if j.task == name]


_lock = threading.Lock()
_active: dict[int | None, EagerLog] = {}  # id(app), or None for every app
_originals: dict[str, Any] = {}


def active_log(app: PgQueue) -> EagerLog | None:
    """The eager log that applies to ``app``, if eager mode is on for it."""
    return _active.get(id(app)) or _active.get(None)


@contextlib.contextmanager
def eager(app: PgQueue | None = None, *, propagate: bool = True) -> Iterator[EagerLog]:
    """Run tasks of ``app`` (default: every app) inline at enqueue; yields the call log.

    Arguments still go through JSON, so what fails to enqueue for real fails here too. Eager
    calls ignore transactions: a rolled-back enqueue has already run. With ``propagate``,
    a task's exception is raised from ``enqueue``; otherwise it is recorded in the log.
    """
    log = EagerLog(propagate=propagate)
    key = None if app is None else id(app)
    with _lock:
        if key in _active:
            raise RuntimeError("eager mode is already on for this app")
        _patch()
        _active[key] = log
    try:
        yield log
    finally:
        with _lock:
            del _active[key]


def _job(
    task: Task[Any, Any], log: EagerLog, args: Sequence[Any], kw: Mapping[str, Any]
) -> EagerJob:
    encoded = task.new_job(args, kw)  # the same validation and encoding as a real enqueue
    job = EagerJob(len(log.jobs) + 1, task.name, encoded.queue,
                   json.loads(encoded.args), json.loads(encoded.kwargs))  # fmt: skip
    log.jobs.append(job)
    return job


def _target(task: Task[Any, Any]) -> Task[Any, Any]:
    if task.fn is not None:
        return task
    registered = task.app.get_task(task.name)
    if registered is None or registered.fn is None:
        raise UnknownTaskError(task.name)
    return registered


def _context(task: Task[Any, Any], job: EagerJob) -> JobContext:
    return JobContext(job.id, job.task, job.queue, 1, task.options.max_attempts, {})


@contextlib.contextmanager
def _attempt(
    task: Task[Any, Any], log: EagerLog, args: Sequence[Any], kw: Mapping[str, Any]
) -> Iterator[tuple[EagerJob, Task[Any, Any]]]:
    """Record one eager job and run its body as the current job; keep (or raise) its error."""
    job = _job(task, log, args, kw)
    target = _target(task)
    token = _current.set(_context(target, job))
    try:
        yield job, target
    except Exception as exc:
        job.error = exc
        if log.propagate:
            raise
    finally:
        _current.reset(token)


def _check_result(target: Task[Any, Any], result: Any) -> None:
    """Raise the ``TypeError`` a worker fails the job with when it cannot store ``result``."""
    if target.options.store_result:
        try:
            _json.dumps(result)
        except TypeError as exc:
            raise TypeError(f"the return value is not JSON-serialisable: {exc}") from None


def _await(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to the end from sync code, even when an event loop runs in this thread
    (a sync ``enqueue`` called from async code): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    context = contextvars.copy_context()  # the current job, for current_job()
    with ThreadPoolExecutor(1, thread_name_prefix="pgqueue-eager") as pool:
        return pool.submit(context.run, asyncio.run, coro).result()


def _run_sync(
    task: Task[Any, Any], log: EagerLog, args: Sequence[Any], kw: Mapping[str, Any]
) -> int:
    with _attempt(task, log, args, kw) as (job, target):
        job.result = target(*job.args, **job.kwargs)
        if asyncio.iscoroutine(job.result):
            job.result = _await(job.result)
        _check_result(target, job.result)
    return job.id


async def _run_async(
    task: Task[Any, Any], log: EagerLog, args: Sequence[Any], kw: Mapping[str, Any]
) -> int:
    with _attempt(task, log, args, kw) as (job, target):
        job.result = target(*job.args, **job.kwargs)
        if asyncio.iscoroutine(job.result):
            job.result = await job.result
        _check_result(target, job.result)
    return job.id


def _checked_calls(
    task: Task[Any, Any], calls: Iterable[Any], unique_keys: Iterable[str | None] | None
) -> list[tuple[Any, int | None]]:
    """``calls`` as a list, refused as ``enqueue_many`` refuses them (a shared unique key, bad
    ``unique_keys``, an argument JSON cannot hold) before the first one runs; each with the
    index of the earlier call with its key, whose job it gets, if any (else ``None``: it runs)."""
    listed = list(calls)
    keys = task._encode_many(listed, unique_keys)[3] or [None] * len(listed)
    first: dict[str, int] = {}
    checked: list[tuple[Any, int | None]] = []
    for i, (call, key) in enumerate(zip(listed, keys, strict=True)):
        earlier = None if key is None else first.setdefault(key, i)
        checked.append((call, None if earlier == i else earlier))
    return checked


def _patch() -> None:
    """Wrap Task's enqueue methods once; outside eager mode they call the originals."""
    if _originals:
        return
    for name in ("enqueue", "aenqueue", "enqueue_many", "aenqueue_many"):
        _originals[name] = getattr(Task, name)

    def enqueue(self: Task[Any, Any], conn: Any, /, *args: Any, **kwargs: Any) -> Any:
        log = active_log(self.app)
        if log is None:
            return _originals["enqueue"](self, conn, *args, **kwargs)
        return _run_sync(self, log, args, kwargs)

    async def aenqueue(self: Task[Any, Any], conn: Any, /, *args: Any, **kwargs: Any) -> Any:
        log = active_log(self.app)
        if log is None:
            return await _originals["aenqueue"](self, conn, *args, **kwargs)
        return await _run_async(self, log, args, kwargs)

    def enqueue_many(
        self: Task[Any, Any], conn: Any, calls: Iterable[Any], *, unique_keys: Any = None
    ) -> Any:
        log = active_log(self.app)
        if log is None:
            return _originals["enqueue_many"](self, conn, calls, unique_keys=unique_keys)
        ids: list[int] = []
        for (a, k), earlier in _checked_calls(self, calls, unique_keys):
            ids.append(ids[earlier] if earlier is not None else _run_sync(self, log, a, k))
        return ids

    async def aenqueue_many(
        self: Task[Any, Any], conn: Any, calls: Iterable[Any], *, unique_keys: Any = None
    ) -> Any:
        log = active_log(self.app)
        if log is None:
            return await _originals["aenqueue_many"](self, conn, calls, unique_keys=unique_keys)
        ids: list[int] = []
        for (a, k), earlier in _checked_calls(self, calls, unique_keys):
            ids.append(ids[earlier] if earlier is not None else await _run_async(self, log, a, k))
        return ids

    for fn in (enqueue, aenqueue, enqueue_many, aenqueue_many):
        fn.__doc__ = _originals[fn.__name__].__doc__
        setattr(Task, fn.__name__, fn)


for _cls in (EagerJob, EagerLog):
    _cls.__module__ = "pgqueue.testing"
