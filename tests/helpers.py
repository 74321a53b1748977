"""Helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store


def query(dsn: str, statement: Any, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement in its own autocommit connection and return its rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def wait_blocked(dsn: str, pid: int, besides: int | None = None) -> None:
    """Until the backend ``pid`` waits for a lock held by another than ``besides``."""
    for _ in range(600):
        blockers = query(dsn, "SELECT pg_blocking_pids(%s)", [pid])[0][0]
        if blockers and besides not in blockers:
            return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} never waited on a row lock")


def states(dsn: str) -> dict[str, int]:
    """How many jobs are in each state."""
    return dict(query(dsn, "SELECT state, count(*) FROM pgqueue.jobs GROUP BY state"))


async def run_worker_until(
    worker: pgqueue.Worker, done: Callable[[], bool], timeout: float = 30.0
) -> None:
    """Run ``worker`` until ``done()`` is true (checked every 20 ms, off the loop), then stop it."""
    runner = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while not await asyncio.to_thread(done):
            if runner.done():
                runner.result()
                raise AssertionError("the worker stopped before the condition was met")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)


def terminate(dsn: str, *roles: str) -> None:
    """pg_terminate_backend() the worker connections of ``roles`` ("acker", ...), as a server
    restart or an administrator would; a worker learns of it when it next uses them."""
    names = [f"pgqueue {role}" for role in roles]
    query(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
               " WHERE application_name = ANY(%s) AND datname = current_database()",
          [names])  # fmt: skip


def raise_at(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, nth: int = 1) -> list[int]:
    """Make ``owner.<name>`` (a function or method, sync or async) raise RuntimeError (a
    bug) at its ``nth`` call only; returns a list that grows by one at each call."""
    original = getattr(owner, name)
    calls: list[int] = []

    def count() -> None:
        calls.append(1)
        if len(calls) == nth:
            raise RuntimeError(f"injected bug in {name}")

    if inspect.iscoroutinefunction(original):

        async def broken(*args: Any, **kwargs: Any) -> Any:
            count()
            return await original(*args, **kwargs)
    else:

        def broken(*args: Any, **kwargs: Any) -> Any:
            count()
            return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, broken)
    return calls


def refuse_acks(worker: pgqueue.Worker) -> None:
    """Make every write of outcomes by ``worker`` fail as a broken connection would."""
    real = worker._ack_db.run

    async def run(q: Any) -> Any:
        if isinstance(q, _store.Together) or "outcomes" in (getattr(q, "params", None) or {}):
            raise psycopg.OperationalError("injected: no ack is written")
        return await real(q)

    worker._ack_db.run = run  # type: ignore[method-assign]


async def cancel_running(worker: pgqueue.Worker, stopped: bool) -> asyncio.Future[None]:
    """Run ``worker`` until it runs a job, stop() it if ``stopped``, cancel the task running
    it, and return that task once it has ended (within a minute)."""
    running = asyncio.ensure_future(worker.run())
    async with asyncio.timeout(60):
        while worker.running != 1:
            await asyncio.sleep(0.01)
    if stopped:
        worker.stop()
    running.cancel()
    await asyncio.wait([running], timeout=60)
    return running


async def stop_with_one_asked_to_cancel(
    dsn: str,
    conn: Any,
    app: pgqueue.PgQueue,
    task: str,
    prepare: Callable[[pgqueue.Worker], None] = lambda w: None,
) -> tuple[pgqueue.Worker, int, int]:
    """Enqueue two jobs of ``task`` (on queue ``q``; it must outlive the test), run a worker
    (after ``prepare(worker)``) until both run, ask the first to cancel behind its back (no
    hint: a heartbeat's news, and the heartbeat is 300 s away), and stop it: its shutdown's
    release ends that one cancelled and puts the other back. Returns the worker and the two
    ids, after checking the rows say so."""
    doomed, kept = (app.using(task).enqueue(conn) for _ in range(2))
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, lease=600, heartbeat=300, shutdown_timeout=0.2)
    prepare(w)

    def both_run_then_one_cancelled() -> bool:
        if states(dsn) != {"running": 2}:
            return False
        query(dsn, "UPDATE pgqueue.active_jobs SET cancel_requested = true WHERE id = %s", [doomed])
        return True

    await run_worker_until(w, both_run_then_one_cancelled)
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs ORDER BY id") == [
        (doomed, "cancelled"),
        (kept, "queued"),
    ]
    return w, doomed, kept
