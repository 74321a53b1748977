"""Which Django tasks a pgqueue worker may run, and how it runs them.

Invariant 8 (a row never makes the worker import or call anything unregistered) holds as for
any pgqueue task: a Django task becomes runnable when the backend validates it, which Django
does when the ``@task`` decorator creates it. So the worker runs exactly the Django tasks
defined in modules it imported itself: every installed app's ``tasks`` module (autodiscovered
by the app's ``ready()``), the modules those import, and ``PGQUEUE["TASK_MODULES"]``. A row
naming anything else fails as an unknown task; nothing is imported on its behalf.

``task_started`` is sent by the runner, as each attempt starts; ``task_finished`` by the
worker once it wrote the job's end (an app ``job_ended`` hook), from the row: nothing here
guesses what the worker will record.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import psycopg
from asgiref.sync import sync_to_async

from pgqueue._hooks import JobEvent
from pgqueue._manage import read_job
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
    app.hooks.job_ended[name] = send_finished
    is_async = inspect.iscoroutinefunction(task.func)
    app.task(
        name=name, executor="async" if is_async else "thread", queue=task.queue_name,
        priority=int(task.priority), max_attempts=max_attempts,
    )(_async_runner(name) if is_async else _sync_runner(name))  # fmt: skip


def _started(name: str) -> Any:
    """The RUNNING result of the current job, read from the database; sends task_started.
    Django's connections are released around it, receivers' too (an async task's runs it in
    a thread of its own, which nothing else releases)."""
    _conf.release_connections()
    try:
        task = _tasks[name]
        job = _read(lambda: read_job(_conf.connection(), current_job().id))
        assert job is not None
        result = task_result(task, job, task.backend)
        dt.task_started.send(type(task.get_backend()), task_result=result)
    finally:
        _conf.release_connections()
    return result


def _read(read: Callable[[], Any]) -> Any:
    """``read()`` on Django's connection, once more if it found that connection lost (a
    persistent one the server dropped: the adapter replaces it), so that neither the task's
    start nor its signal is lost to a connection the worker's thread kept from before."""
    try:
        return read()
    except psycopg.OperationalError:
        raw = _conf.connection().connection
        if raw is None or not raw.closed:
            raise
    return read()


def _call_args(task: Any, result: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (dt.TaskContext(task_result=result), *args) if task.takes_context else args


def storable(value: Any) -> Any:
    """What pgqueue is handed for a task's arguments or return value: Django's JSON of it
    (bytes as text, any mapping a dict, any sequence a list), or the value itself when Django
    refuses it, so that pgqueue refuses it as it refuses any value that is not JSON (an
    enqueue's TypeError naming the argument; a job failed at once, with a TypeError)."""
    try:
        return dt.normalize_json(value)
    except (TypeError, ValueError, RecursionError):
        return value


def send_finished(event: JobEvent) -> None:
    """Send ``task_finished`` for a Django task's job, once the worker wrote its end (an
    app ``job_ended`` hook), with the result ``get_result`` reads: what the row says. A row
    no longer ended (retried by hand since) or gone sends nothing; a receiver's error is
    logged by the worker (``callback_error``) and leaves the job as it ended. Django's
    connections are released around it all, receivers' too, as around a task."""
    task = _tasks[event.job.task]
    _conf.release_connections()
    try:
        try:
            result = _read(lambda: task.get_backend()._read_result(str(event.job.id)))
        except dt.TaskResultDoesNotExist:
            return
        if result.status in (dt.TaskResultStatus.SUCCESSFUL, dt.TaskResultStatus.FAILED):
            dt.task_finished.send(type(task.get_backend()), task_result=result)
    finally:
        _conf.release_connections()


def _sync_runner(name: str) -> Callable[..., Any]:
    def run_django_task(*args: Any, **kwargs: Any) -> Any:
        result = _started(name)
        task = _tasks[name]
        return storable(task.call(*_call_args(task, result, args), **kwargs))

    return run_django_task


def _async_runner(name: str) -> Callable[..., Any]:
    async def run_django_task(*args: Any, **kwargs: Any) -> Any:
        result = await sync_to_async(_started, thread_sensitive=False)(name)
        task = _tasks[name]
        return storable(await task.acall(*_call_args(task, result, args), **kwargs))

    return run_django_task
