"""``assert_enqueued``: was this task enqueued with these arguments? And its async twins."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._connections import (
    AsyncConnection,
    ConnectionKindError,
    SyncConnection,
    async_connection,
    async_cursor,
    sync_connection,
    sync_cursor,
)
from pgqueue._errors import SchemaError, first_line
from pgqueue._options import check_count
from pgqueue._schema import schema_missing, schema_problem
from pgqueue._task import Task
from pgqueue.testing._eager import active_log

Call = tuple[str, list[Any], dict[str, Any]]  # queue, args, kwargs


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples become lists, as they do in the database


def _eager_calls(task: Task[Any, Any]) -> list[Call] | None:
    """The calls of ``task`` in eager mode; ``None`` outside it (read the database)."""
    log = active_log(task.app)
    if log is None:
        return None
    return [(j.queue, j.args, j.kwargs) for j in log.of(task)]


def _calls(rows: list[tuple[Any, ...]]) -> list[Call]:
    return [(queue, json.loads(a), json.loads(k)) for _id, queue, a, k in rows]


def _dsn(task: Task[Any, Any], name: str) -> str:
    return task.app._configured_dsn(f"pass {name}(..., conn=...) or PgQueue(dsn=...)")


@contextlib.contextmanager
def _schema_said() -> Iterator[None]:
    """A missing schema said as enqueue says it, not as psycopg's UndefinedTable."""
    try:
        yield
    except psycopg.Error as exc:
        if schema_missing(exc):
            raise SchemaError(f"{schema_problem(False, None)} ({first_line(exc)})") from exc
        raise


def _refused(conn: Any, sync: bool) -> TypeError:
    """The error for a ``conn`` of the other kind (or none pgqueue knows), naming the twin
    that takes it: the connections module's words are about enqueue and aenqueue."""
    kind = f"{type(conn).__module__}.{type(conn).__qualname__}"
    if sync:
        wanted = "a sync connection or cursor (psycopg's, or SQLAlchemy's or Django's"
        other = "an async one, await aassert_enqueued() or aassert_not_enqueued()"
    else:
        wanted = "an async connection or cursor (psycopg's, or SQLAlchemy's async ones"
        other = "a sync one, call assert_enqueued() or assert_not_enqueued()"
    return TypeError(
        f"conn must be {wanted} with pgqueue's contrib), got a {kind}; for {other} instead"
    )


def _idle(conn: psycopg.BaseConnection[Any]) -> bool:
    """Whether reading on ``conn`` would open a transaction that the caller then holds ("idle
    in transaction", a snapshot kept): no transaction is open, and it is not autocommit."""
    return not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def _queued(task: Task[Any, Any], conn: SyncConnection | None) -> list[Call]:
    calls = _eager_calls(task)
    if calls is not None:
        return calls
    query = _store.jobs_list_queued(task.name)
    with _schema_said():
        if conn is None:
            dsn = _dsn(task, "assert_enqueued")
            with psycopg.connect(dsn, autocommit=True) as own, own.cursor() as cur:
                return _calls(_store.run(cur, query))
        try:
            found = sync_connection(conn)
        except ConnectionKindError:
            raise _refused(conn, sync=True) from None
        with (
            found.transaction(force_rollback=True) if _idle(found) else contextlib.nullcontext(),
            sync_cursor(found) as cur,
        ):
            return _calls(_store.run(cur, query))


async def _aqueued(task: Task[Any, Any], conn: AsyncConnection | None) -> list[Call]:
    calls = _eager_calls(task)
    if calls is not None:
        return calls
    query = _store.jobs_list_queued(task.name)
    with _schema_said():
        if conn is None:
            dsn = _dsn(task, "aassert_enqueued")
            own = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            async with own, own.cursor() as cur:
                return _calls(await _store.arun(cur, query))
        try:
            found = await async_connection(conn)
        except ConnectionKindError:
            raise _refused(conn, sync=False) from None
        async with (
            found.transaction(force_rollback=True) if _idle(found) else contextlib.nullcontext(),
            async_cursor(found) as cur,
        ):
            return _calls(await _store.arun(cur, query))


def _matching(
    calls: list[Call], args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
    queue: str | None,
) -> list[Call]:  # fmt: skip
    want_args = None if args is None else _normal(list(args))
    want_kwargs = None if kwargs is None else _normal(dict(kwargs))
    return [
        c for c in calls
        if (queue is None or c[0] == queue)
        and (want_args is None or c[1] == want_args)
        and (want_kwargs is None or c[2] == want_kwargs)
    ]  # fmt: skip


def _check(task: Task[Any, Any], args: Any, kwargs: Any, count: Any) -> None:
    """Refuse what can only match by accident: ``args="ab"`` would be ``["a", "b"]``."""
    if not isinstance(task, Task):
        raise TypeError(f"task must be a pgqueue Task (the decorated function), got {task!r}")
    if args is not None and (
        isinstance(args, str | bytes | Mapping) or not isinstance(args, Sequence)
    ):
        raise TypeError(f"args must be a list or tuple of positional arguments, got {args!r}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a dict of keyword arguments, got {kwargs!r}")
    if count is not None:
        check_count(count, "count", 0)


def _describe(task: Task[Any, Any], calls: list[Call]) -> str:
    if not calls:
        return f"no job of {task.name!r} is queued"
    shown = [f"  queue={q!r} args={a!r} kwargs={k!r}" for q, a, k in calls[:20]]
    if len(calls) > 20:
        shown.append(f"  ... and {len(calls) - 20} more")
    return f"queued jobs of {task.name!r}:\n" + "\n".join(shown)


def _verdict(
    task: Task[Any, Any], args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
    queue: str | None, count: int | None, calls: list[Call],
) -> None:  # fmt: skip
    """Raise ``AssertionError`` unless ``calls`` hold a match (exactly ``count`` of them)."""
    found = _matching(calls, args, kwargs, queue)
    if (count is None and not found) or (count is not None and len(found) != count):
        wanted = "a job" if count is None else f"{count} job(s)"
        raise AssertionError(
            f"expected {wanted} of {task.name!r} with args={args!r} kwargs={kwargs!r}"
            f" queue={queue!r}; found {len(found)}. {_describe(task, calls)}"
        )


def assert_enqueued(
    task: Task[Any, Any],
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    count: int | None = None,
    conn: SyncConnection | None = None,
) -> None:
    """Fail unless a queued job of ``task`` matches (``None`` matches anything).

    In eager mode the calls made so far are checked. Otherwise queued jobs are read on
    ``conn`` (so uncommitted enqueues in its transaction count), or on a new connection to
    the app's database. ``count`` asks for exactly that many matches. For an async
    connection, await :func:`aassert_enqueued`.
    """
    _check(task, args, kwargs, count)
    _verdict(task, args, kwargs, queue, count, _queued(task, conn))


def assert_not_enqueued(
    task: Task[Any, Any],
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    conn: SyncConnection | None = None,
) -> None:
    """Fail if a queued job of ``task`` matches (``None`` matches anything)."""
    assert_enqueued(task, args, kwargs, queue=queue, count=0, conn=conn)


async def aassert_enqueued(
    task: Task[Any, Any],
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    count: int | None = None,
    conn: AsyncConnection | None = None,
) -> None:
    """Async twin of :func:`assert_enqueued`: ``conn`` is an async connection (psycopg's
    ``AsyncConnection`` or ``AsyncCursor``, SQLAlchemy's ``AsyncSession`` or
    ``AsyncConnection``), so the uncommitted enqueues of its transaction count."""
    _check(task, args, kwargs, count)
    _verdict(task, args, kwargs, queue, count, await _aqueued(task, conn))


async def aassert_not_enqueued(
    task: Task[Any, Any],
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    conn: AsyncConnection | None = None,
) -> None:
    """Async twin of :func:`assert_not_enqueued`."""
    await aassert_enqueued(task, args, kwargs, queue=queue, count=0, conn=conn)
