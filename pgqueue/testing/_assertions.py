"""``assert_enqueued``: was this task enqueued with these arguments?"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._connections import SyncConnection, sync_cursor
from pgqueue._errors import SchemaError, first_line
from pgqueue._options import check_count
from pgqueue._schema import schema_missing, schema_problem
from pgqueue._task import Task
from pgqueue.testing._eager import active_log

Call = tuple[str, list[Any], dict[str, Any]]  # queue, args, kwargs


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples become lists, as they do in the database


def _queued(task: Task[Any, Any], conn: SyncConnection | None) -> list[Call]:
    log = active_log(task.app)
    if log is not None:
        return [(j.queue, j.args, j.kwargs) for j in log.of(task)]
    query = _store.jobs_list_queued(task.name)
    try:
        if conn is None:
            dsn = task.app._configured_dsn(
                "pass assert_enqueued(..., conn=...) or PgQueue(dsn=...)"
            )
            with psycopg.connect(dsn, autocommit=True) as own, own.cursor() as cur:
                rows = _store.run(cur, query)
        else:
            with _cursor(conn) as cur:
                rows = _store.run(cur, query)
    except psycopg.Error as exc:
        if schema_missing(exc):  # said as enqueue says it, not as psycopg's UndefinedTable
            raise SchemaError(f"{schema_problem(False, None)} ({first_line(exc)})") from exc
        raise
    return [(queue, json.loads(a), json.loads(k)) for _id, queue, a, k in rows]


def _cursor(conn: SyncConnection) -> psycopg.Cursor[Any]:
    """A cursor on ``conn``; refused in words about assert_enqueued, not about enqueue (an
    async connection was told to "use aenqueue() instead of enqueue()")."""
    try:
        return sync_cursor(conn)
    except TypeError:
        kind = f"{type(conn).__module__}.{type(conn).__qualname__}"
        raise TypeError(
            "conn must be a sync connection or cursor (psycopg's, or SQLAlchemy's or Django's "
            f"with pgqueue's contrib), got a {kind}; for an async one, commit its transaction "
            "and leave conn out: queued jobs are then read on a new connection"
        ) from None


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
    the app's database. ``count`` asks for exactly that many matches.
    """
    _check(task, args, kwargs, count)
    calls = _queued(task, conn)
    found = _matching(calls, args, kwargs, queue)
    if (count is None and not found) or (count is not None and len(found) != count):
        wanted = "a job" if count is None else f"{count} job(s)"
        raise AssertionError(
            f"expected {wanted} of {task.name!r} with args={args!r} kwargs={kwargs!r}"
            f" queue={queue!r}; found {len(found)}. {_describe(task, calls)}"
        )


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
