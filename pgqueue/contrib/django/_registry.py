"""Which Django tasks a pgqueue worker may run, and how it runs them.

Invariant 8 (a row never makes the worker import or call anything unregistered) holds as for
any pgqueue task: a Django task becomes runnable when the backend validates it, which Django
does when the ``@task`` decorator creates it. So the worker runs exactly the Django tasks
defined in modules it imported itself: every installed app's ``tasks`` module (autodiscovered
by the app's ``ready()``), the modules those import, and ``PGQUEUE["TASK_MODULES"]``. A row
naming anything else fails as an unknown task; nothing is imported on its behalf.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import traceback
from collections.abc import Callable
from typing import Any

import psycopg
from asgiref.sync import sync_to_async

from pgqueue import Cancel, Retry, _json
from pgqueue._manage import get_job
from pgqueue._worker import current_job
from pgqueue.contrib.django import _compat as dt
from pgqueue.contrib.django import _conf
from pgqueue.contrib.django._results import task_result

_tasks: dict[str, Any] = {}


def django_task(name: str) -> Any:
    """The Django task registered under ``name`` (its module path), or ``None``."""
    return _tasks.get(name)


def register(task: Any, max_attempts: int) -> None:
    """Make a Django task runnable by pgqueue workers, under its module path, with the
    options it is enqueued with (its queue and priority, the backend's ``max_attempts``), so
    that one enqueued by name (``manage.py pgqueue enqueue``) gets them too."""
    name: str = task.module_path
    if name in _tasks:
        return
    app = _conf.get_app()
    if name in app.tasks:
        raise ValueError(f"{name!r} is already a pgqueue task: give one of them another name")
    _tasks[name] = task
    is_async = inspect.iscoroutinefunction(task.func)
    app.task(
        name=name, executor="async" if is_async else "thread", queue=task.queue_name,
        priority=int(task.priority), max_attempts=max_attempts,
    )(_async_runner(name) if is_async else _sync_runner(name))  # fmt: skip


def _started(name: str) -> Any:
    """The RUNNING result of the current job, read from the database; sends task_started."""
    _conf.release_connections()
    task = _tasks[name]
    job = get_job(_conf.connection(), current_job().id)
    _conf.release_connections()
    assert job is not None
    result = task_result(task, job, task.backend)
    dt.task_started.send(type(task.get_backend()), task_result=result)
    return result


def _finished(result: Any, value: Any = None, error: BaseException | None = None) -> None:
    """Mark ``result`` finished (for the signal only: the ack writes the row) and send it."""
    from django.utils import timezone

    if error is None:
        object.__setattr__(result, "_return_value", value)
        object.__setattr__(result, "status", dt.TaskResultStatus.SUCCESSFUL)
    else:
        path = f"{type(error).__module__}.{type(error).__qualname__}"
        tb = "".join(traceback.format_exception(error))
        result.errors.append(dt.TaskError(exception_class_path=path, traceback=tb))
        object.__setattr__(result, "status", dt.TaskResultStatus.FAILED)
    # The row's finished_at comes from the database's clock when the outcome is acked.
    object.__setattr__(result, "finished_at", timezone.now())
    dt.task_finished.send(type(result.task.get_backend()), task_result=result)
    _conf.release_connections()


def _call_args(task: Any, result: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (dt.TaskContext(task_result=result), *args) if task.takes_context else args


def _ending(error: BaseException | None, gave_up: str | None) -> tuple[bool, BaseException | None]:
    """How pgqueue's worker ends this attempt, which ended with ``error`` (``None``: it
    returned a storable value) after the worker gave up on it for the reason ``gave_up``, if
    it did: whether it is the task's end, so that ``task_finished`` is sent, and with which
    error (``None``: SUCCESSFUL). Mirrors the executor (``run``, ``_failure``), the worker
    (``_execute``, ``_kept``) and ``JOBS_ACK``: a retried attempt sends no signal."""
    job = current_job()
    if gave_up in ("shutdown", "lease lost") or job.cancel_reason == "lease lost":
        return False, None  # back in the queue, or another attempt's now: nothing written
    if gave_up == "cancel requested":
        return True, _cancelled()
    if gave_up == "timeout":
        error = TimeoutError("timed out")
    elif error is None or isinstance(error, Cancel):
        return True, error
    # Any other exception (SystemExit, the CancelledError of a timeout...) is a failure,
    # retried while attempts are left; a Retry always. JOBS_ACK cancels a retried job whose
    # cancel was requested, keeping the attempt's error (a Retry has none).
    if isinstance(error, Retry) or job.attempt < job.max_attempts:
        if not _cancel_requested(job):
            return False, None
        return True, _cancelled() if isinstance(error, Retry) else error
    return True, error


def _cancelled() -> BaseException:
    return Cancel("cancelled on request")


def _cancel_requested(job: Any) -> bool:
    """Whether ``job`` was asked to cancel, as JOBS_ACK will read it when it records this
    attempt's retry. The worker learns of a request at its next heartbeat: the row is read.
    (A request committed between this read and the ack still ends the job unsignalled.)"""
    from django.db import Error

    if job.cancel_reason == "cancel requested":
        return True
    _conf.release_connections()
    try:
        row = get_job(_conf.connection(), job.id)
    except (psycopg.Error, Error):  # the task's error, not this one, is the attempt's
        return False  # the worker's heartbeat will tell, as it would have without this read
    finally:
        _conf.release_connections()
    return row is not None and row.cancel_requested


def _end(result: Any, value: Any, error: BaseException | None, gave_up: str | None) -> None:
    """Send ``task_finished`` if this attempt is the task's end (see :func:`_ending`)."""
    end, error = _ending(error, gave_up)
    if end:
        _finished(result, value, error)


def _thread_given_up() -> str | None:
    """Why the worker gave up on the thread running this attempt, if it did: it has then
    recorded the attempt's outcome, whatever the thread does next. A timeout is recorded
    after the thread is told to stop (``JobContext.cancelled``), hence told by that."""
    job = current_job()
    return job.cancel_reason or ("timeout" if job.is_cancelled else None)


def _coroutine_given_up(error: BaseException | None) -> str | None:
    """Why the worker gave up on this attempt's coroutine, if it did: only a cancellation that
    reaches the worker ends it as the worker decides. One the task caught, to return or raise
    something else, leaves its outcome to the task. The job's timeout cancels the coroutine
    with no reason recorded yet; a CancelledError of the task's own cancels nothing."""
    if not isinstance(error, asyncio.CancelledError):
        return None
    running = asyncio.current_task()
    timed_out = running is not None and running.cancelling() > 0
    return current_job().cancel_reason or ("timeout" if timed_out else None)


def _returned(name: str, raw: Any) -> tuple[Any, Any, BaseException | None]:
    """What the runner hands pgqueue for a task's return value, the value ``get_result``
    will read (JSON's: a dict's keys are strings), and the error that keeps the value from
    being stored, if any. Such a value is handed over as the task gave it, so that pgqueue
    fails the job as it fails any task whose value is not JSON: at once (running the task
    again would repeat its work for nothing), with a ``TypeError``. A task that stores no
    result (``store_result=False``) succeeds whatever it returns, and reads ``None``."""
    stored = _conf.get_app().get_task(name)
    if stored is None or not stored.options.store_result:
        return raw, None, None
    try:
        text = _json.dumps(dt.normalize_json(raw))  # Django's JSON is not PostgreSQL's: NaN...
    except (TypeError, ValueError, RecursionError) as exc:
        return raw, None, exc if isinstance(exc, TypeError) else TypeError(str(exc))
    value = json.loads(text)
    return value, value, None


def _sync_runner(name: str) -> Callable[..., Any]:
    def run_django_task(*args: Any, **kwargs: Any) -> Any:
        result = _started(name)
        task = _tasks[name]
        try:
            raw = task.call(*_call_args(task, result, args), **kwargs)
        except BaseException as exc:
            _end(result, None, exc, _thread_given_up())
            raise
        handed, value, error = _returned(name, raw)
        _end(result, value, error, _thread_given_up())
        return handed

    return run_django_task


def _async_runner(name: str) -> Callable[..., Any]:
    async def run_django_task(*args: Any, **kwargs: Any) -> Any:
        result = await sync_to_async(_started, thread_sensitive=False)(name)
        task = _tasks[name]
        try:
            raw = await task.acall(*_call_args(task, result, args), **kwargs)
        except BaseException as exc:
            gave_up = _coroutine_given_up(exc)
            await sync_to_async(_end, thread_sensitive=False)(result, None, exc, gave_up)
            raise
        handed, value, error = _returned(name, raw)
        await sync_to_async(_end, thread_sensitive=False)(result, value, error, None)
        return handed

    return run_django_task
