"""A backend for Django's tasks framework that enqueues in your database transaction.

``TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.PgQueueBackend"}}``. A task enqueued
inside ``transaction.atomic()`` is a pgqueue job written on Django's own connection: it exists
exactly when the ORM writes commit. pgqueue workers (``manage.py pgqueue worker``) run it.

``OPTIONS``: ``"DATABASE"`` (default, and only allowed value, ``PGQUEUE["DATABASE"]``: the
database workers run jobs from) and ``"MAX_ATTEMPTS"`` (default 1: a Django task that raises is
FAILED at once, as Django's API expects).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from pgqueue._manage import get_job, read_job
from pgqueue._options import MAX_ATTEMPTS_LIMIT, check_job_id
from pgqueue.contrib.django import _compat as dt
from pgqueue.contrib.django import _conf, _registry
from pgqueue.contrib.django._results import task_result

__all__ = ["PgQueueBackend"]

OPTIONS = ("DATABASE", "MAX_ATTEMPTS")  # the keys of a backend's OPTIONS


class PgQueueBackend(dt.BaseTaskBackend):  # type: ignore[misc]
    """Django tasks as pgqueue jobs: transactional enqueue, deferral, priority, results.

    Django's priorities (-100..100, higher first) are pgqueue priorities unchanged; a task's
    ``queue_name`` is its pgqueue queue; ``run_after`` is the job's ``run_at``.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._check_options()
        self.database: str | None = self.options.get("DATABASE")
        self.max_attempts = self._max_attempts(self.options.get("MAX_ATTEMPTS", 1))

    def _check_options(self) -> None:
        """``OPTIONS`` as a dict of the keys this backend reads: a typo ("MAX_ATEMPTS") was
        ignored, its tasks given the default without a word."""
        from django.core.exceptions import ImproperlyConfigured

        where = f"TASKS[{self.alias!r}]['OPTIONS']"
        if not isinstance(self.options, dict):
            raise ImproperlyConfigured(f"{where} must be a dict, got {self.options!r}")
        unknown = sorted(map(repr, set(self.options) - set(OPTIONS)))
        if unknown:
            raise ImproperlyConfigured(
                f"unknown {where} key(s): {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
            )

    def _max_attempts(self, value: Any) -> int:
        """``OPTIONS["MAX_ATTEMPTS"]`` as an int (a string of digits will do), checked once
        here rather than failing every enqueue."""
        from django.core.exceptions import ImproperlyConfigured

        whole = isinstance(value, int | str) and not isinstance(value, bool)
        if whole and str(value).strip().isdigit() and 1 <= int(value) <= MAX_ATTEMPTS_LIMIT:
            return int(value)
        raise ImproperlyConfigured(
            f"TASKS[{self.alias!r}]['OPTIONS']['MAX_ATTEMPTS'] must be a whole number from 1 "
            f"to {MAX_ATTEMPTS_LIMIT}, got {value!r}"
        )

    def _connection(self) -> Any:
        from django.core.exceptions import ImproperlyConfigured
        from django.db import connections

        alias = _conf.database_alias()
        if self.database not in (None, alias):
            raise ImproperlyConfigured(self._elsewhere(alias))
        return connections[alias]

    def _elsewhere(self, alias: str) -> str:
        return (
            f"TASKS[{self.alias!r}]['OPTIONS']['DATABASE'] is {self.database!r}, but pgqueue's"
            f" workers run the jobs of PGQUEUE['DATABASE'] ({alias!r}): its tasks would be"
            " enqueued where no worker looks"
        )

    def check(self, **kwargs: Any) -> Any:
        """Django's checks of a backend, and pgqueue's: its database is the workers' one."""
        from django.core import checks

        yield from super().check(**kwargs)
        alias = _conf.database_alias()
        if self.database not in (None, alias):
            yield checks.Error(
                self._elsewhere(alias), id="pgqueue.E001",
                hint=f"remove OPTIONS['DATABASE'] (the backend uses PGQUEUE['DATABASE']), or"
                     f" set PGQUEUE['DATABASE'] = {self.database!r} to move pgqueue there",
            )  # fmt: skip

    def validate_task(self, task: Any) -> None:
        """Django's checks, then pgqueue's (queue name, run_after), then register the task."""
        super().validate_task(task)
        try:
            self._job(task)
        except ValueError as exc:
            raise dt.InvalidTask(str(exc)) from None
        _registry.register(task, self.max_attempts)

    def _job(self, task: Any) -> Any:
        """The pgqueue task a Django task is enqueued as; ``ValueError`` if pgqueue cannot
        hold its options."""
        return _conf.get_app().using(
            task.module_path, queue=task.queue_name, priority=int(task.priority),
            max_attempts=self.max_attempts, run_at=self._run_at(task.run_after),
        )  # fmt: skip

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Insert the job on Django's connection, in the current transaction if any, with
        the arguments Django's own backends take (see _registry.storable)."""
        connection = self._connection()
        self.validate_task(task)
        _refuse_eager_mode()
        args, kwargs = _registry.storable(args), _registry.storable(kwargs)
        job_id = self._job(task).enqueue(connection, *args, **kwargs)
        result = self._result(task, connection, job_id)
        dt.task_enqueued.send(type(self), task_result=result)
        return result

    @staticmethod
    def _run_at(run_after: Any) -> Any:
        from django.utils import timezone

        if run_after is not None and timezone.is_naive(run_after):
            return timezone.make_aware(run_after)
        return run_after

    def _result(self, task: Any, connection: Any, job_id: int) -> Any:
        job = read_job(connection, job_id)  # just enqueued: no schema check (enqueue has none)
        if job is None:
            raise dt.TaskResultDoesNotExist(str(job_id))
        return task_result(task, job, self.alias)

    def get_result(self, result_id: str) -> Any:
        """The result of job ``result_id``, read from the database (works in any process)."""
        return self._read_result(result_id, check_schema=True)

    def _read_result(self, result_id: str, check_schema: bool = False) -> Any:
        """:meth:`get_result`, the schema's revision checked only with ``check_schema``: not
        by the worker sending task_finished (it checked at its start), on a connection that
        is new for each job."""
        job_id = _job_id(result_id)
        read = get_job if check_schema else read_job
        job = None if job_id is None else read(self._connection(), job_id)
        task = _registry.django_task(job.task) if job is not None else None
        if job is None or task is None:
            raise dt.TaskResultDoesNotExist(result_id)
        return task_result(task, job, self.alias)


PgQueueBackend.__module__ = "pgqueue.contrib.django"

_RESULT_ID = re.compile(r"[1-9][0-9]{0,18}")


def _job_id(result_id: Any) -> int | None:
    """The job a result id names, if any. Ids are ``str(job.id)``: another spelling of a
    number (`` 7``, ``07``, ``7_0``) names no result, and one beyond bigint no job."""
    text = str(result_id) if type(result_id) is int else result_id
    if not isinstance(text, str) or not _RESULT_ID.fullmatch(text):
        return None
    try:
        return check_job_id(int(text))
    except ValueError:
        return None


def _refuse_eager_mode() -> None:
    """A django.tasks task's result is its job's row, which pgqueue's eager mode never writes:
    its enqueue described whatever job held the eager call's number (or failed on an assert).
    Say what to use instead. (Eager mode is on only if its module was imported.)"""
    eager = sys.modules.get("pgqueue.testing._eager")
    if eager is not None and eager.active_log(_conf.get_app()) is not None:
        raise RuntimeError(
            f"pgqueue.testing.eager() cannot run {dt.FLAVOUR} tasks through PgQueueBackend:"
            " their results are read from the database, where eager mode writes nothing. In"
            f" tests, give TASKS the backend '{dt.FLAVOUR}.backends.immediate.ImmediateBackend',"
            " or enqueue for real and run the jobs with pgqueue.testing.drain()."
        )
