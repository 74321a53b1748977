"""Tasks: a registered function plus its job options, and the ways to enqueue it."""

from __future__ import annotations

import inspect
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import psycopg

from pgqueue import _json, _store, _unique
from pgqueue._connections import (
    AsyncConnection,
    SyncConnection,
    async_cursor,
    commits_alone,
    sync_cursor,
)
from pgqueue._errors import PgQueueError, SchemaError, first_line
from pgqueue._hooks import Ids, Sent
from pgqueue._options import JobOptions, OnConflict, check_task_name
from pgqueue._schema import UNDEFINED, schema_missing, schema_problem

if TYPE_CHECKING:
    from pgqueue._app import PgQueue

P = ParamSpec("P")
R = TypeVar("R")

# Rows per INSERT ... SELECT unnest(...) statement in enqueue_many.
MANY_CHUNK = 5000


class Task(Generic[P, R]):
    """A function registered with a :class:`PgQueue`; enqueue it to run it on a worker.

    Calling the task calls the function directly, in this process.
    """

    __slots__ = ("_is_async", "app", "fn", "name", "options")

    def __init__(
        self, app: PgQueue, fn: Callable[P, R] | None, name: str, options: JobOptions
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self._is_async = inspect.iscoroutinefunction(fn)  # asked once per job on the hot path

    def __repr__(self) -> str:
        return f"<pgqueue.Task {self.name!r} queue={self.options.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.fn is None:
            raise TypeError(f"task {self.name!r} is only a reference: it has no function here")
        return self.fn(*args, **kwargs)

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (runs on the worker's event loop)."""
        return self._is_async

    def using(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict | None = None,
    ) -> Task[P, R]:
        """A copy of this task whose jobs use other options; raises ``ValueError`` at once.

        With ``unique_key``, no second job is created while one holding the key is queued or
        running: enqueue returns the existing job's id, or raises :class:`~pgqueue.DuplicateJob`
        when ``on_conflict="raise"``.
        """
        options = self.options.merge(
            queue=queue, priority=priority, delay=delay, run_at=run_at,
            max_attempts=max_attempts, timeout=timeout, unique_key=unique_key,
            on_conflict=on_conflict,
        )  # fmt: skip
        return Task(self.app, self.fn, self.name, options)

    def new_job(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> _store.NewJob:
        """Validate and encode one call as a row to insert. Raises before any SQL is sent."""
        encoded_args, encoded_kwargs = _json.dumps_arguments(
            self.name, args, kwargs, self.app.max_payload_bytes
        )
        o = self.options
        hooks = self.app.hooks
        meta = _json.dumps(hooks.job_meta(o.meta)) if o.meta or hooks.enqueue_meta else "{}"
        return _store.NewJob(
            queue=o.queue, task=self.name, args=encoded_args, kwargs=encoded_kwargs,
            priority=o.priority, max_attempts=o.max_attempts, run_at=o.run_at, delay=o.delay,
            timeout=o.timeout, unique_key=o.unique_key, meta=meta,
        )  # fmt: skip

    def enqueue(self, conn: SyncConnection, /, *args: P.args, **kwargs: P.kwargs) -> int:
        """Insert a job in the caller's transaction (never commits); returns the job id.

        ``conn`` is a psycopg ``Connection`` or ``Cursor`` (or a registered adapter's object).
        The job exists, and workers are woken, only once the caller commits. Arguments over
        ``max_payload_bytes`` of JSON raise ``ValueError`` before any SQL; arguments the table
        refuses as over 1 MiB of jsonb raise it too, and then the transaction is aborted.
        """
        with self._sending(False) as sent:
            job = self.new_job(args, kwargs)
            with sync_cursor(conn) as cur:
                try:
                    if job.unique_key is not None:
                        return sent(*_unique.enqueue(cur, job, self.options.on_conflict))
                    return sent(_store.run(cur, _store.jobs_insert(job)))
                except _EXPLAINED as exc:
                    _raise_explained(self.name, exc)
                    raise

    async def aenqueue(self, conn: AsyncConnection, /, *args: P.args, **kwargs: P.kwargs) -> int:
        """Async twin of :meth:`enqueue`, for a psycopg ``AsyncConnection`` or ``AsyncCursor``."""
        with self._sending(False) as sent:
            job = self.new_job(args, kwargs)
            async with async_cursor(conn) as cur:
                try:
                    if job.unique_key is not None:
                        return sent(*await _unique.aenqueue(cur, job, self.options.on_conflict))
                    return sent(await _store.arun(cur, _store.jobs_insert(job)))
                except _EXPLAINED as exc:
                    _raise_explained(self.name, exc)
                    raise

    def _sending(self, batch: bool) -> AbstractContextManager[Sent]:
        """The app's span around an enqueue (``pgqueue.tracing``'s), or nothing."""
        span = self.app.hooks.enqueue_span
        return _UNTRACED if span is None else span(self.name, self.options.queue, batch)

    def _encode_many(
        self, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
        unique_keys: Iterable[str | None] | None = None,
    ) -> tuple[_store.NewJob, list[str], list[str], list[str | None] | None]:  # fmt: skip
        """enqueue_many's calls encoded and checked, with their keys: ``None`` when no job has
        one (the path that may COPY)."""
        if self.options.unique_key is not None:
            raise ValueError(
                "enqueue_many cannot share one unique_key between jobs:"
                " give each its own with unique_keys=[...]"
            )
        template = self.new_job((), {})
        encoded = _encode_calls(self.name, calls, self.app.max_payload_bytes)
        keys = (
            None
            if unique_keys is None
            else _checked_keys(unique_keys, len(encoded), self.options.on_conflict)
        )
        if keys is not None and all(key is None for key in keys):
            keys = None
        return template, [e[0] for e in encoded], [e[1] for e in encoded], keys

    @staticmethod
    def _chunks(
        template: _store.NewJob, args: list[str], kwargs: list[str]
    ) -> Iterable[_store.Query[list[int]]]:
        for start in range(0, len(args), MANY_CHUNK):
            end = start + MANY_CHUNK
            yield _store.jobs_insert_many(template, args[start:end], kwargs[start:end])

    def _insert_many(
        self, cur: psycopg.Cursor[Any], template: _store.NewJob, args: list[str],
        kwargs: list[str], own: bool,
    ) -> list[int]:  # fmt: skip
        """enqueue_many's jobs without keys: COPY or INSERTs; ids in input order. ``own``: in
        a transaction of the batch's own, which its error rolls back."""
        if _store.copy_usable(cur.connection, len(args)):
            ids, written = _store.jobs_copy(cur, template, args, kwargs)
        else:
            chunks = self._chunks(template, args, kwargs)
            ids = [i for query in chunks for i in _store.run(cur, query)]
            written = len(ids)
        if written != len(args):
            if own:
                raise _dropped(written, len(args))
            try:
                _store.run(cur, _store.jobs_delete_new(ids))
            except psycopg.Error as exc:  # a role that may not delete: pgqueue_producer
                raise _dropped(written, len(args), exc) from exc
            raise _dropped(written, len(args))
        return ids

    async def _ainsert_many(
        self, cur: psycopg.AsyncCursor[Any], template: _store.NewJob, args: list[str],
        kwargs: list[str], own: bool,
    ) -> list[int]:  # fmt: skip
        """Async twin of :meth:`_insert_many`."""
        if _store.copy_usable(cur.connection, len(args)):
            ids, written = await _store.ajobs_copy(cur, template, args, kwargs)
        else:
            chunks = self._chunks(template, args, kwargs)
            ids = [i for query in chunks for i in await _store.arun(cur, query)]
            written = len(ids)
        if written != len(args):
            if own:
                raise _dropped(written, len(args))
            try:
                await _store.arun(cur, _store.jobs_delete_new(ids))
            except psycopg.Error as exc:
                raise _dropped(written, len(args), exc) from exc
            raise _dropped(written, len(args))
        return ids

    def enqueue_many(
        self, conn: SyncConnection, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
        *, unique_keys: Iterable[str | None] | None = None,
    ) -> list[int]:  # fmt: skip
        """Insert one job per ``(args, kwargs)`` pair in a few statements; ids in input order.

        Every call is validated and encoded before the first statement is sent. Big batches
        (``COPY_THRESHOLD`` jobs or more) are loaded with COPY, except in the caller's
        pipeline. Size errors are those of :meth:`enqueue`, prefixed with the call or the
        batch they concern.

        ``unique_keys``, one per call (``None`` for a job without one), are each job's
        ``unique_key`` as in :meth:`using`: a job whose key an active job holds is not
        inserted and its place gets that job's id (or, with ``on_conflict="raise"``, the whole
        batch is refused with :class:`~pgqueue.DuplicateJob` and nothing is inserted); a key
        given twice makes one job, whose id both places get (with ``on_conflict="raise"``,
        a ``ValueError`` before any SQL).
        """
        with self._sending(True) as sent:
            template, args, kwargs, keys = self._encode_many(calls, unique_keys)
            with sync_cursor(conn) as cur:
                try:
                    if keys is not None:
                        on_conflict = self.options.on_conflict
                        ids, written = _unique.enqueue_many(
                            cur, template, args, kwargs, keys, on_conflict
                        )
                        return sent(ids, written=written)
                    own = commits_alone(cur.connection)
                    with _one_commit(cur.connection, own):
                        return sent(self._insert_many(cur, template, args, kwargs, own))
                except _EXPLAINED as exc:
                    _raise_explained(self.name, exc, len(args))
                    raise

    async def aenqueue_many(
        self, conn: AsyncConnection, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
        *, unique_keys: Iterable[str | None] | None = None,
    ) -> list[int]:  # fmt: skip
        """Async twin of :meth:`enqueue_many`."""
        with self._sending(True) as sent:
            template, args, kwargs, keys = self._encode_many(calls, unique_keys)
            async with async_cursor(conn) as cur:
                try:
                    if keys is not None:
                        on_conflict = self.options.on_conflict
                        ids, written = await _unique.aenqueue_many(
                            cur, template, args, kwargs, keys, on_conflict
                        )
                        return sent(ids, written=written)
                    own = commits_alone(cur.connection)
                    async with _one_commit(cur.connection, own):
                        return sent(await self._ainsert_many(cur, template, args, kwargs, own))
                except _EXPLAINED as exc:
                    _raise_explained(self.name, exc, len(args))
                    raise


def _same(ids: Ids, /, existing: bool | None = None, written: int | None = None) -> Ids:
    return ids


_UNTRACED = nullcontext(_same)  # an enqueue of an app with no enqueue span


def _one_commit(conn: Any, own: bool) -> Any:
    """A transaction of the batch's ``own`` around enqueue_many's statements where each would
    commit alone (:func:`commits_alone`): a batch refused at its second statement (INSERTs of
    ``MANY_CHUNK`` jobs) left its first 5,000 jobs, and one a user's trigger left short would
    have committed its jobs, for a worker to claim, before deleting them. Otherwise nothing:
    in the caller's transaction (``conn.transaction()``'s too, on an autocommit connection,
    where ours would be a savepoint), it commits them."""
    return conn.transaction() if own else nullcontext()


def _dropped(written: int, jobs: int, failed: psycopg.Error | None = None) -> PgQueueError:
    """enqueue_many's error for a batch a user's trigger left short; ``failed``: the error
    that kept its jobs from being deleted, which aborted the transaction."""
    ending = (
        "none of the batch's jobs was inserted"
        if failed is None
        else f"taking back the others failed ({first_line(failed)}): the transaction is"
        " aborted and must be rolled back"
    )
    return PgQueueError(
        f"enqueue_many: {jobs - written} of the batch's {jobs} jobs did not go in (a BEFORE"
        f" INSERT trigger on pgqueue.active_jobs returned NULL?): {ending}"
    )


def _encode_calls(
    task: str, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]], limit: int
) -> list[tuple[str, str]]:
    """Encode enqueue_many's calls; an error names the bad call by its index in ``calls``.
    An error ``calls`` itself raises (a generator's own bug) is left as it is, traceback and
    all: it is no bad call's."""
    encoded: list[tuple[str, str]] = []
    append = encoded.append
    for call in calls:
        try:
            append(_encode_call(task, call, limit))
        except (TypeError, ValueError) as exc:
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(f"enqueue_many call {len(encoded)}: {exc}") from None
    return encoded


def _encode_call(task: str, call: Any, limit: int) -> tuple[str, str]:
    try:
        args, kwargs = call
    except (TypeError, ValueError):
        raise TypeError(f"must be an (args, kwargs) pair, got {reprlib.repr(call)}") from None
    # A str would be read as its characters, a dict as its keys, pairs as a dict; None or a
    # number as "'NoneType' object is not iterable".
    if args.__class__ not in _PLAIN_ARGS and (
        isinstance(args, str | bytes | Mapping) or not hasattr(args, "__iter__")
    ):
        raise TypeError(f"args must be a tuple or list, got {reprlib.repr(args)}")
    if kwargs.__class__ is not dict and not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a dict, got {reprlib.repr(kwargs)}")
    return _json.dumps_arguments(task, args, kwargs, limit)


_PLAIN_ARGS = (tuple, list)


def _checked_keys(
    keys: Iterable[str | None], calls: int, on_conflict: OnConflict
) -> list[str | None]:
    """enqueue_many's ``unique_keys`` as a list, one per call, each ``None`` or a usable key,
    and with ``on_conflict="raise"`` none twice (two unique enqueues of a key raise at the
    second, and a batch makes one job of a repeated key); an error names the call."""
    # A set (dict keys too) has an order of its own, not the calls': its keys would go to
    # calls at random.
    if isinstance(keys, str | bytes | Mapping | AbstractSet) or not hasattr(keys, "__iter__"):
        raise TypeError(
            "enqueue_many: unique_keys must be a list of str (or None), one per call,"
            f" got {reprlib.repr(keys)}"
        )
    listed = list(keys)
    if len(listed) != calls:
        raise ValueError(
            f"enqueue_many: unique_keys has {len(listed)} keys for {calls} calls:"
            " give one per call (None for a job without a key)"
        )
    first: dict[str, int] = {}
    for n, key in enumerate(listed):
        if key is None:
            continue
        try:
            check_task_name(key, "unique_key")
        except ValueError as exc:
            raise ValueError(f"enqueue_many call {n}: {exc}") from None
        if first.setdefault(key, n) != n and on_conflict == "raise":
            raise ValueError(
                f"enqueue_many call {n}: unique_key {key!r} is call {first[key]}'s too:"
                ' with on_conflict="raise" a batch gives each key once'
            )
    return listed


# Errors of an enqueue's statement that say more with a word of pgqueue's: arguments too large
# as stored, and a database without pgqueue's schema. Only raised ones pay for the check.
_EXPLAINED = (psycopg.errors.CheckViolation, *UNDEFINED)


def _raise_explained(task: str, exc: psycopg.Error, jobs: int = 0) -> None:
    """Raise pgqueue's error for ``exc``, caused by it, where there is one: the app's size
    error if the table refused stored arguments over its limit (``jobs`` is the size of an
    enqueue_many batch: a COPY names the call, an INSERT does not say which of its rows it
    refused), ``SchemaError`` if the statement itself (not a trigger it fired) found pgqueue's
    schema missing. Otherwise return, and the caller re-raises ``exc``. The statement failed
    either way: the transaction is aborted."""
    if not isinstance(exc, psycopg.errors.CheckViolation):
        if not schema_missing(exc):  # raised in a function: a user's trigger, say
            return
        missing = schema_problem(False, None)
        raise SchemaError(
            f"{missing} ({first_line(exc)}); the transaction is aborted and must be rolled back"
        ) from exc
    if not _store.payload_refused(exc):
        return
    error = _json.stored_size_error(task)
    if jobs:
        row = _store.copy_row(exc) if jobs >= _store.COPY_THRESHOLD else None
        where = (
            f"one of the {jobs} jobs of enqueue_many" if row is None else f"enqueue_many call {row}"
        )
        error = ValueError(f"{where}: {error}")
    raise error from exc


Task.__module__ = "pgqueue"
