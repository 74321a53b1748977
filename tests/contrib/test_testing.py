"""pgqueue.testing: eager mode, drain, assert_enqueued, and the pytest plugin's fixtures."""

from __future__ import annotations

import asyncio
import gc
import http.server
import json
import logging
import os
import socketserver
import subprocess
import sys
import threading
import warnings
import weakref
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import pgqueue
from pgqueue import _connections, _testdb
from pgqueue.testing import (
    _drain,
    aassert_enqueued,
    aassert_not_enqueued,
    adrain,
    assert_enqueued,
    assert_not_enqueued,
    drain,
    eager,
)
from tests.contrib import testing_tasks as t
from tests.helpers import query, states


def test_eager_runs_tasks_inline_and_records_them() -> None:
    """In eager mode enqueue runs the task at once (current_job works) and logs the call."""
    with eager(t.app) as log:
        first = t.add.enqueue(None, 2, 3)
        second = t.who_am_i.enqueue(None)
    assert [(j.task, j.args, j.result) for j in log.jobs] == [
        (t.add.name, [2, 3], 5), (t.who_am_i.name, [], [second, 1]),
    ]  # fmt: skip
    assert (first, log.jobs[1].queue) == (1, "emails")


def test_eager_checks_arguments_and_propagates_errors() -> None:
    """Eager mode still refuses non-JSON arguments, and raises the task's exception."""
    with eager(t.app):
        with pytest.raises(TypeError):
            t.add.enqueue(None, object(), 1)
        with pytest.raises(ValueError, match="nope"):
            t.fails.enqueue(None)
    with eager(t.app, propagate=False) as log:
        t.fails.enqueue(None)
    assert isinstance(log.jobs[0].error, ValueError)


def test_eager_fails_a_return_value_a_worker_could_not_store() -> None:
    """A result JSON cannot hold fails in eager mode as on a worker (unless not stored)."""
    with eager(t.app), pytest.raises(TypeError, match="return value is not JSON-serialisable"):
        t.today.enqueue(None)
    with eager(t.app, propagate=False) as log:
        t.today.enqueue(None)
        t.today_unstored.enqueue(None)
    assert [type(j.error) for j in log.jobs] == [TypeError, type(None)]


def test_eager_enqueue_many_refuses_what_the_real_one_refuses_before_running_any() -> None:
    """A shared unique_key, or one call JSON cannot hold, is refused before any call runs."""
    with eager(t.app) as log:
        with pytest.raises(ValueError, match="unique_key"):
            t.add.using(unique_key="k").enqueue_many(None, [((1, 2), {})])
        with pytest.raises(TypeError, match="positional argument 0"):
            t.add.enqueue_many(None, iter([((1, 2), {}), ((object(), 2), {})]))
    assert log.jobs == []


async def test_eager_enqueue_many_with_unique_keys_runs_each_key_once_per_call() -> None:
    """unique_keys in eager mode: checked as the real enqueue_many checks them, before any
    call runs; a key twice in one call runs its first call only, whose id both places get,
    as the real batch makes one job of it."""
    with eager(t.app) as log:
        with pytest.raises(ValueError, match=r"^enqueue_many call 1: invalid unique_key 5"):
            t.add.enqueue_many(None, [((1, 2), {}), ((3, 4), {})], unique_keys=["a", 5])
        assert log.jobs == []
        ids = t.add.enqueue_many(None, [((1, 2), {}), ((3, 4), {}), ((5, 6), {}), ((7, 8), {})],
                                 unique_keys=["a", None, "a", "b"])  # fmt: skip
        again = await t.double.aenqueue_many(None, [((1,), {}), ((2,), {})], unique_keys=["c"] * 2)
    assert ids == [1, 2, 1, 3] and again == [4, 4]
    assert [(j.id, j.result) for j in log.jobs] == [(1, 3), (2, 7), (3, 15), (4, 2)]


def test_eager_enqueue_many_refuses_a_repeated_key_with_on_conflict_raise() -> None:
    """As the real enqueue_many: with on_conflict="raise" a key given twice is a ValueError
    before any call runs, not the first call's job for both."""
    message = r"^enqueue_many call 1: unique_key 'a' is call 0's"
    with eager(t.app) as log, pytest.raises(ValueError, match=message):
        t.add.using(on_conflict="raise").enqueue_many(
            None, [((1, 2), {}), ((3, 4), {})], unique_keys=["a", "a"]
        )
    assert log.jobs == []


async def test_eager_sync_enqueue_of_an_async_task_from_async_code() -> None:
    """A sync enqueue called inside a running event loop still runs an async task."""
    with eager(t.app) as log:
        t.double.enqueue(None, 4)
        await t.double.aenqueue_many(None, [((5,), {})])
    assert [(j.result, j.error) for j in log.jobs] == [(8, None), (10, None)]


def test_eager_for_one_app_leaves_other_apps_enqueueing_for_real(conn) -> None:
    """eager(app) only affects that app's tasks: others still insert rows."""
    with eager(t.app):
        t.elsewhere.enqueue(conn)
        t.add.enqueue(conn, 1, 1)
    assert query_rows(conn) == [t.elsewhere.name]


def query_rows(conn: psycopg.Connection) -> list[str]:
    """Task names of the rows visible on ``conn``."""
    return [r[0] for r in conn.execute("SELECT task FROM pgqueue.jobs ORDER BY id").fetchall()]


async def test_eager_aenqueue_awaits_async_tasks() -> None:
    """aenqueue in eager mode awaits a coroutine task inline."""
    with eager() as log:
        await t.double.aenqueue(None, 21)
        t.add.enqueue_many(None, [((1, 2), {}), ((3, 4), {})])
    assert [j.result for j in log.jobs] == [42, 3, 7]


def test_assert_enqueued_in_eager_mode() -> None:
    """assert_enqueued checks the eager log: args, count, and a helpful failure."""
    with eager(t.app):
        t.add.enqueue(None, 1, 2)
        assert_enqueued(t.add, args=(1, 2))
        assert_enqueued(t.add, count=1)
        assert_not_enqueued(t.who_am_i)
        with pytest.raises(AssertionError, match=r"args=\[1, 2\]"):
            assert_enqueued(t.add, args=[9, 9])


def test_assert_enqueued_failure_says_how_many_jobs_it_does_not_list() -> None:
    """The failure lists 20 jobs and says how many more there are: a list cut short without
    a word read as every job there was."""
    with eager(t.app):
        t.add.enqueue_many(None, [((i, i), {}) for i in range(25)])
        with pytest.raises(AssertionError) as failure:
            assert_enqueued(t.add, args=[99, 99])
    assert "found 0" in str(failure.value)
    assert str(failure.value).splitlines()[-2:] == [
        "  queue='default' args=[19, 19] kwargs={}", "  ... and 5 more",
    ]  # fmt: skip


def test_assert_enqueued_refuses_arguments_that_could_only_match_by_accident() -> None:
    """args as a string (its characters) or a dict (its keys), kwargs that are no mapping,
    a task name instead of the task, or a negative count: an error naming the value."""
    with eager(t.app):
        t.add.enqueue(None, "a", "b")
        with pytest.raises(TypeError, match=r"args must be a list or tuple.*'ab'"):
            assert_enqueued(t.add, args="ab")
        with pytest.raises(TypeError, match="args must be"):
            assert_enqueued(t.add, args={"a": 1})
        with pytest.raises(TypeError, match=r"kwargs must be a dict.*\[1\]"):
            assert_enqueued(t.add, kwargs=[1])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"task must be a pgqueue Task.*'add'"):
            assert_enqueued("add")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="count must be an int >= 0, got -1"):
            assert_enqueued(t.add, count=-1)
        assert_enqueued(t.add, args=("a", "b"), kwargs={}, count=1)


def test_assert_enqueued_reads_uncommitted_jobs_on_the_callers_connection(conn, dsn) -> None:
    """With conn=, the jobs of the open transaction count; without it, only committed ones."""
    t.add.using(queue="math").enqueue(conn, 4, 5)
    assert_enqueued(t.add, args=[4, 5], queue="math", conn=conn)
    assert_not_enqueued(t.add, args=[4, 5], conn=conn, queue="default")
    with psycopg.connect(dsn) as other, pytest.raises(AssertionError, match="no job"):
        assert_enqueued(t.add, conn=other)
    conn.commit()
    t.app._dsn = dsn
    try:
        assert_enqueued(t.add, kwargs={})
    finally:
        t.app._dsn = None


def test_assert_enqueued_leaves_an_idle_connection_idle(conn, dsn) -> None:
    """On a connection with no transaction open (not autocommit), the assertion's read opened
    one and left it "idle in transaction", holding a snapshot the test never asked for: it
    now ends it, and a connection in a transaction stays in it, its jobs seen."""
    assert_not_enqueued(t.add, conn=conn)
    assert_not_enqueued(t.add, conn=conn.cursor())
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    t.add.enqueue(conn, 1, 2)
    assert_enqueued(t.add, args=[1, 2], conn=conn)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


async def test_aassert_enqueued_leaves_an_idle_async_connection_idle(aconn) -> None:
    """The async twin of the above: an idle async connection stays idle."""
    await aassert_not_enqueued(t.add, conn=aconn)
    await aassert_not_enqueued(t.add, conn=aconn.cursor())
    assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    await t.add.aenqueue(aconn, 1, 2)
    await aassert_enqueued(t.add, args=[1, 2], conn=aconn)
    assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


async def test_assert_enqueued_on_an_async_connection_names_its_async_twin(aconn) -> None:
    """An async connection as ``conn`` was told to commit and leave conn out, losing the
    uncommitted jobs the test meant to check: the error now names aassert_enqueued."""
    with pytest.raises(TypeError, match="conn must be a sync connection") as raised:
        assert_enqueued(t.add, conn=aconn)
    assert str(raised.value).endswith(
        "got a psycopg.AsyncConnection; for an async one, await aassert_enqueued() or "
        "aassert_not_enqueued() instead"
    )


async def test_aassert_enqueued_reads_uncommitted_jobs_in_the_callers_async_transaction(
    aconn, dsn
) -> None:
    """On an async conn=, the jobs of its open transaction count, by queue and count; another
    connection, or none (a new one), sees only committed ones."""
    await t.add.using(queue="math").aenqueue(aconn, 4, 5)
    await t.add.aenqueue(aconn, 4, 5)
    await aassert_enqueued(t.add, args=[4, 5], queue="math", conn=aconn)
    await aassert_enqueued(t.add, args=(4, 5), count=2, conn=aconn)
    await aassert_enqueued(t.add, kwargs={}, queue="default", count=1, conn=aconn.cursor())
    with pytest.raises(AssertionError, match=r"expected 3 job\(s\).*found 2"):
        await aassert_enqueued(t.add, count=3, conn=aconn)
    async with await psycopg.AsyncConnection.connect(dsn) as other:
        with pytest.raises(AssertionError, match=r"no job of 'tests\.contrib\.testing_tasks\.add'"):
            await aassert_enqueued(t.add, conn=other)
    await aconn.commit()
    t.app._dsn = dsn
    try:
        await aassert_enqueued(t.add, args=[4, 5], count=2)
    finally:
        t.app._dsn = None


async def test_aassert_enqueued_reads_an_sqlalchemy_async_sessions_transaction(dsn) -> None:
    """An AsyncSession (FastAPI's usual one) as conn=: its uncommitted jobs count; rolled
    back, they are gone. An AsyncConnection of the same engine reads its own transaction."""
    pytest.importorskip("sqlalchemy.ext.asyncio", reason="SQLAlchemy's asyncio is not installed")
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.pool import NullPool

    from tests.contrib.test_sqlalchemy import url

    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        async with AsyncSession(db) as session:
            await t.add.aenqueue(session, 1, 2)
            await aassert_enqueued(t.add, args=[1, 2], count=1, conn=session)
            async with db.connect() as other:
                await aassert_not_enqueued(t.add, conn=other)
            await session.rollback()
            await aassert_not_enqueued(t.add, conn=session)
    finally:
        await db.dispose()


async def test_assert_enqueued_passes_on_what_an_adapter_says_of_a_connection_of_its_kind(
    dsn,
) -> None:
    """A Session or AsyncSession whose binds name two engines was "not a sync (async)
    connection" to assert_enqueued and its twin, which hid what SQLAlchemy's adapter says:
    which connection to hand over instead."""
    pytest.importorskip("sqlalchemy.ext.asyncio", reason="SQLAlchemy's asyncio is not installed")
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import NullPool

    from tests.contrib.sqlalchemy_app import app as shop
    from tests.contrib.test_sqlalchemy import url

    said = r"binds are 2 engines.*bind_arguments="
    engines = [create_engine(url(dsn), poolclass=NullPool) for _ in range(2)]
    aengines = [create_async_engine(url(dsn), poolclass=NullPool) for _ in range(2)]
    try:
        binds = {shop.Order: engines[0], shop.Base: engines[1]}
        with Session(binds=binds) as session, pytest.raises(TypeError, match=said):
            assert_enqueued(t.add, conn=session)
        abinds = {shop.Order: aengines[0], shop.Base: aengines[1]}
        async with AsyncSession(binds=abinds) as asession:
            with pytest.raises(TypeError, match=said):
                await aassert_enqueued(t.add, conn=asession)
    finally:
        for engine in engines:
            engine.dispose()
        for aengine in aengines:
            await aengine.dispose()


async def test_aassert_not_enqueued_fails_on_a_matching_uncommitted_job(aconn) -> None:
    """aassert_not_enqueued passes while nothing matches, and lists the job that does."""
    await aassert_not_enqueued(t.add, conn=aconn)
    await t.add.aenqueue(aconn, 1, 2)
    await aassert_not_enqueued(t.add, args=[2, 1], conn=aconn)
    await aassert_not_enqueued(t.add, queue="math", conn=aconn)
    with pytest.raises(
        AssertionError, match=r"(?s)expected 0 job.*\n  queue='default' args=\[1, 2\] kwargs=\{\}$"
    ):
        await aassert_not_enqueued(t.add, args=[1, 2], conn=aconn)


async def test_aassert_enqueued_in_eager_mode_checks_the_calls_made() -> None:
    """In eager mode the async twins read the eager log, as the sync ones do, and refuse what
    could only match by accident before reading anything."""
    with eager(t.app):
        await t.double.aenqueue(None, 21)
        await aassert_enqueued(t.double, args=[21], count=1)
        await aassert_not_enqueued(t.add)
        with pytest.raises(AssertionError, match=r"queue='default' args=\[21\]"):
            await aassert_enqueued(t.double, args=[9])
        with pytest.raises(TypeError, match="args must be a list or tuple"):
            await aassert_enqueued(t.double, args="ab")


async def test_aassert_enqueued_on_a_sync_connection_names_the_sync_one(conn) -> None:
    """A sync connection was told to "use enqueue() instead of aenqueue()", which the test
    never called; the error names assert_enqueued, and so does one for an unknown object."""
    for wrong in (conn, object()):
        with pytest.raises(TypeError, match="conn must be an async connection") as raised:
            await aassert_enqueued(t.add, conn=wrong)
        assert str(raised.value).endswith(
            "; for a sync one, call assert_enqueued() or assert_not_enqueued() instead"
        )


async def test_aassert_enqueued_without_a_dsn_or_schema_says_so(
    empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without conn= on an app without a DSN, the error names aassert_enqueued's conn=; a
    database without pgqueue's schema is a SchemaError, as for the sync one."""
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    task = pgqueue.PgQueue().task(name="some_task")(t.add.fn)
    with pytest.raises(pgqueue.ConfigurationError, match=r"pass aassert_enqueued\(\.\.\., conn="):
        await aassert_not_enqueued(task)
    task.app._dsn = empty_dsn
    with pytest.raises(pgqueue.SchemaError, match="run `pgqueue migrate`"):
        await aassert_enqueued(task)
    async with await psycopg.AsyncConnection.connect(empty_dsn) as own:
        with pytest.raises(pgqueue.SchemaError):
            await aassert_not_enqueued(task, conn=own)


def test_assert_enqueued_on_a_database_without_the_schema_says_to_migrate(
    empty_dsn: str,
) -> None:
    """Without pgqueue's schema, assert_enqueued raised psycopg's UndefinedTable; it now says
    what enqueue says: the schema is not installed, run ``pgqueue migrate``."""
    app = pgqueue.PgQueue(empty_dsn)
    task = app.task(name="some_task")(t.add.fn)
    with pytest.raises(pgqueue.SchemaError, match="run `pgqueue migrate`"):
        assert_enqueued(task)
    with psycopg.connect(empty_dsn) as own, pytest.raises(pgqueue.SchemaError):
        assert_not_enqueued(task, conn=own)


def test_drain_and_assert_enqueued_without_a_dsn_name_what_their_caller_can_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On an app without a DSN, drain() and assert_enqueued() said only "pass
    PgQueue(dsn=...)": each now names its own argument too (drain's dsn=, assert_enqueued's
    conn=)."""
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    app = pgqueue.PgQueue()
    task = app.task(name="some_task")(t.add.fn)
    with pytest.raises(pgqueue.ConfigurationError, match=r"pass drain\(app, dsn=\.\.\.\) or Pg"):
        drain(app)
    with pytest.raises(pgqueue.ConfigurationError, match=r"pass assert_enqueued\(\.\.\., conn="):
        assert_enqueued(task)
    with pytest.raises(pgqueue.ConfigurationError, match=r"pass assert_enqueued\(\.\.\., conn="):
        assert_not_enqueued(task)


def _counts(**nonzero: int) -> dict[str, int]:
    """drain()'s counts: those given, and 0 of the others."""
    return (
        dict.fromkeys(("succeeded", "failed", "retried", "rescheduled", "cancelled"), 0) | nonzero
    )


def test_drain_runs_every_queued_job_including_scheduled_ones(conn, dsn: str) -> None:
    """drain() runs every committed job of every queue, later ones too, until none is left."""
    t.add.enqueue(conn, 1, 2)
    t.who_am_i.enqueue(conn)
    t.add.using(delay=timedelta(hours=1)).enqueue(conn, 3, 4)
    conn.commit()
    assert drain(t.app, dsn=dsn) == _counts(succeeded=3)
    assert states(dsn) == {"succeeded": 3}


def test_drain_runs_retries_without_waiting_for_their_backoff(conn, dsn: str) -> None:
    """A failing task is retried by the next round at once, until its attempts are spent."""
    t.fails.enqueue(conn)
    conn.commit()
    assert drain(t.app, dsn=dsn) == _counts(failed=1, retried=1)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == [("failed", 2)]


def test_drain_runs_the_jobs_queued_and_fires_no_periodic_tick(conn, dsn: str) -> None:
    """A round's worker ran the scheduler: ticks missed since the last one recorded (or one
    falling due while a round ran) were enqueued and run, so the counts hung on the clock."""
    app = pgqueue.PgQueue(dsn)
    app.periodic("* * * * *", name="every_minute")(app.task(name="tick")(t.who_am_i.fn))
    add = app.task(name=t.add.name)(t.add.fn)
    add.enqueue(conn, 1, 2)
    conn.execute(
        "INSERT INTO pgqueue.periodic_ticks (name, tick)"
        " VALUES ('every_minute', date_trunc('minute', now()) - interval '3 minutes')"
    )  # the schedule's last tick, three minutes ago: three are missed since
    conn.commit()
    assert drain(app)["succeeded"] == 1
    assert query(dsn, "SELECT task FROM pgqueue.jobs") == [(t.add.name,)]


def test_drain_of_some_queues_leaves_other_queues_alone(conn, dsn: str) -> None:
    """queues= runs those queues only (a string is a comma list, not a substring test), and
    brings forward the scheduled jobs of those queues only."""
    t.add.using(queue="mail").enqueue(conn, 1, 1)
    t.add.using(queue="emails").enqueue(conn, 2, 2)
    t.add.using(queue="later", delay=3600).enqueue(conn, 3, 3)
    conn.commit()
    assert drain(t.app, dsn=dsn, queues="emails")["succeeded"] == 1
    assert query(dsn, "SELECT queue, state, run_at > now() FROM pgqueue.jobs ORDER BY id") == [
        ("mail", "queued", False), ("emails", "succeeded", False), ("later", "queued", True),
    ]  # fmt: skip


def test_drain_of_a_queue_no_task_is_sent_to_by_default_warns_of_nothing(
    conn, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A job sent with using(queue=...) to a queue none of the app's tasks go to by default:
    drain's worker serves that queue on purpose, and the start warning meant for a worker
    left on the default queue (no_task_queue_served) would only be noise in the test's log:
    chosen queues, as drain's are, are said at INFO."""
    t.add.using(queue="elsewhere").enqueue(conn, 1, 1)
    conn.commit()
    with caplog.at_level("WARNING", logger="pgqueue"):
        assert drain(t.app, dsn=dsn)["succeeded"] == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []


def test_drain_leaves_the_jobs_of_another_apps_tasks_alone(conn, dsn: str) -> None:
    """On a database two apps share, drain(app) runs its own jobs only: another app's, in the
    same queue, stay queued (none failed as an unknown task, none brought forward)."""
    t.add.enqueue(conn, 1, 2)
    t.elsewhere.enqueue(conn)
    t.elsewhere.using(delay=3600).enqueue(conn)
    conn.commit()
    assert drain(t.app, dsn=dsn) == _counts(succeeded=1)
    assert query(
        dsn, "SELECT task, state, attempts, run_at > now() FROM pgqueue.jobs ORDER BY id"
    ) == [
        (t.add.name, "succeeded", 1, False),
        (t.elsewhere.name, "queued", 0, False),
        (t.elsewhere.name, "queued", 0, True),
    ]
    assert drain(t.other, dsn=dsn)["succeeded"] == 2


async def test_drains_of_two_apps_on_one_database_take_turns(aconn, dsn: str) -> None:
    """Two drains at once, of two apps sharing a database and a queue: each held the other's
    jobs while it waited for its own, held by the other, and neither ended."""
    for _ in range(3):
        await t.double.aenqueue(aconn, 1)
        await t.elsewhere.aenqueue(aconn)
    await aconn.commit()
    async with asyncio.timeout(60):  # a hang fails the test instead of the run
        ours, theirs = await asyncio.gather(adrain(t.app, dsn=dsn), adrain(t.other, dsn=dsn))
    assert (ours["succeeded"], theirs["succeeded"]) == (3, 3)
    assert states(dsn) == {"succeeded": 6}


async def test_drain_refuses_bad_arguments_and_a_database_without_the_schema(
    dsn: str, empty_dsn: str
) -> None:
    """Bad queues (or none) or max_rounds, a database without pgqueue's schema, a running loop:
    each is a one-line error saying what to do."""
    with pytest.raises(ValueError, match="invalid queue name 'a b'"):
        await adrain(t.app, dsn=dsn, queues=["a b"])
    with pytest.raises(ValueError, match="at least one queue"):
        await adrain(t.app, dsn=dsn, queues=[])
    for rounds in (0, "3", True):
        with pytest.raises(ValueError, match="max_rounds must be an int >= 1"):
            await adrain(t.app, dsn=dsn, max_rounds=rounds)  # type: ignore[arg-type]
    with pytest.raises(pgqueue.SchemaError, match="pgqueue migrate"):
        await adrain(t.app, dsn=empty_dsn)
    with pytest.raises(RuntimeError, match="await adrain"):
        drain(t.app, dsn=dsn)


async def test_adrain_can_leave_scheduled_jobs_alone(aconn, dsn: str) -> None:
    """adrain(with_scheduled=False) runs what is due and leaves later jobs queued."""
    await t.double.aenqueue(aconn, 4)
    await t.add.using(delay=3600).aenqueue(aconn, 1, 1)
    await aconn.commit()
    counts = await adrain(t.app, dsn=dsn, with_scheduled=False)
    assert counts["succeeded"] == 1
    assert states(dsn) == {"succeeded": 1, "queued": 1}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("with_scheduled", [True, False])
def test_drain_ends_a_task_that_always_asks_to_run_again_at_once(
    conn, dsn, with_scheduled: bool
) -> None:
    """Retry() gives the attempt back, so max_attempts never ended a task always raising it:
    due at once, one round's burst worker ran it forever. max_rounds Retry end the drain."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="again")
    def again() -> None:
        raise pgqueue.Retry()

    again.enqueue(conn)
    conn.commit()
    counts = drain(app, max_rounds=3, with_scheduled=with_scheduled)
    assert counts == _counts(rescheduled=3)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("with_scheduled", [True, False])
def test_drain_stops_a_task_that_enqueues_itself_at_every_run_naming_it(
    conn, dsn, with_scheduled: bool
) -> None:
    """A task enqueuing a new job of itself at every run (no delay) kept one round's burst
    worker going for ever: the bound on a job's Retry never sees a new job. max_jobs attempts
    end the drain, the job past them left queued, unrun, and a warning names the task."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="forever")
    def forever() -> None:
        with psycopg.connect(dsn) as own:
            forever.enqueue(own)

    forever.enqueue(conn)
    conn.commit()
    with pytest.warns(
        RuntimeWarning, match=r"max_jobs=30 attempts .* 30 of them of task 'forever'"
    ):
        counts = drain(app, max_jobs=30, with_scheduled=with_scheduled)
    assert counts == _counts(succeeded=30)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE state = 'queued'") == [
        ("queued", 0)
    ]


def _stopped_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The counts of attempts ended that the drain's workers' worker_stopped lines gave."""
    lines = [r.getMessage() for r in caplog.records if getattr(r, "action", "") == "worker_stopped"]
    return [line.split(" (", 1)[1].rsplit(", ", 1)[0] for line in lines]


@pytest.mark.parametrize(
    ("max_jobs", "counts"),
    [(1, _counts(rescheduled=1)),
     (2, _counts(succeeded=1, rescheduled=1))],
)  # fmt: skip
def test_drain_counts_a_jobs_own_retry_apart_from_attempts_max_jobs_refused(
    conn, dsn, max_jobs: int, counts: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A job's own Retry in one round, its next attempt in the next: max_jobs=1 refuses that
    attempt at the second round's start (counted as no retry, the drain warned, nor by its
    worker's worker_stopped line), max_jobs=2 lets it run. The two bounds, kept together in
    the merge, count each attempt once."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)
    runs: list[int] = []

    @app.task(name="twice")
    def twice() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise pgqueue.Retry(delay=3600)

    twice.enqueue(conn)
    conn.commit()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert drain(app, max_jobs=max_jobs) == counts
    assert len(runs) == max_jobs
    assert _stopped_lines(caplog) == [
        "0 succeeded, 0 failed, 0 retried, 1 rescheduled",
        f"{max_jobs - 1} succeeded, 0 failed, 0 retried, 0 rescheduled",
    ]
    warned = [str(w.message) for w in said if "max_jobs" in str(w.message)]
    assert len(warned) == (max_jobs == 1)
    expected = [("queued", 0)] if max_jobs == 1 else [("succeeded", 1)]
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == expected


def test_drain_of_exactly_max_jobs_jobs_says_nothing(conn, dsn) -> None:
    """A drain that runs max_jobs attempts and finds nothing more is not stopped by the bound."""
    for n in range(3):
        t.add.enqueue(conn, n, n)
    conn.commit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert drain(t.app, dsn=dsn, max_jobs=3)["succeeded"] == 3
    with pytest.raises(ValueError, match="max_jobs must be an int >= 1"):
        drain(t.app, dsn=dsn, max_jobs=0)


def test_drain_without_scheduled_jobs_runs_a_job_enqueued_into_another_queue(conn, dsn) -> None:
    """with_scheduled=False ran one round: a job due now that a task enqueued into a queue
    the round's worker did not take (none of its jobs were waiting) was left undrained."""
    app = pgqueue.PgQueue(dsn)
    onward = app.task(name="onward", queue="other")(t.add.fn)

    @app.task(name="first")
    def first() -> None:
        with psycopg.connect(dsn) as own:
            onward.enqueue(own, 1, 2)

    first.enqueue(conn)
    conn.commit()
    assert drain(app, with_scheduled=False)["succeeded"] == 2
    assert states(dsn) == {"succeeded": 2}


def test_pytest_plugin_gives_a_fresh_migrated_database(
    pgqueue_dsn: str, pgqueue_conn: psycopg.Connection, empty_dsn: str
) -> None:
    """The plugin's pgqueue_dsn (entry point pytest11) is a fresh migrated database of its own."""
    assert "dbname=pgqueue_user_test_" in pgqueue_dsn
    assert pgqueue_dsn != empty_dsn
    assert states(pgqueue_dsn) == {}
    t.add.enqueue(pgqueue_conn, 1, 1)
    pgqueue_conn.commit()
    assert states(pgqueue_dsn) == {"queued": 1}


HELD_ROWS = {  # a job the test's own open transaction holds locked, and its delay
    "a queued job of the app": (t.double, 0),
    "a scheduled job of the app": (t.double, 3600),
    "a queued job of another app": (t.elsewhere, 0),
}


@pytest.mark.parametrize("held", HELD_ROWS)
async def test_drain_says_which_transaction_holds_a_job_instead_of_waiting_forever(
    aconn, dsn: str, monkeypatch: pytest.MonkeyPatch, held: str
) -> None:
    """A job row the test's own open transaction holds locked made drain wait forever (a
    claim stepped over it and the burst worker never went idle, or run-now and the hold of
    other apps' jobs waited for it): drain now raises, naming that transaction and the fix."""
    task, delay = HELD_ROWS[held]
    monkeypatch.setattr(_drain, "LOCK_WAIT", 0.2)
    await t.add.aenqueue(aconn, 1, 1)
    await task.using(delay=delay).aenqueue(aconn, *([2] if task is t.double else []))
    await aconn.commit()
    await aconn.execute(
        "SELECT id FROM pgqueue.active_jobs WHERE task = %s FOR UPDATE", [task.name]
    )
    async with asyncio.timeout(60):  # the hang fails the test instead of the run
        with pytest.raises(RuntimeError, match="locked by another transaction") as raised:
            await adrain(t.app, dsn=dsn)
    assert f"pid {aconn.info.backend_pid}" in str(raised.value)
    assert "commit or roll back" in str(raised.value)
    await aconn.rollback()
    assert (await adrain(t.app, dsn=dsn))["succeeded"] == 2 - (task is t.elsewhere)


UPDATING = {  # a queued job's row held by a lock that FOR KEY SHARE does not wait for
    "a plain update": "UPDATE pgqueue.active_jobs SET priority = 1",
    "for share": "SELECT id FROM pgqueue.active_jobs FOR SHARE",
}


@pytest.mark.parametrize("hold", UPDATING)
async def test_drain_says_which_transaction_updated_a_job_instead_of_waiting_forever(
    aconn, dsn: str, monkeypatch: pytest.MonkeyPatch, hold: str
) -> None:
    """A queued job of the app that the test's open transaction updated (a plain UPDATE takes
    FOR NO KEY UPDATE) or locked FOR SHARE passed the probe, which locked FOR KEY SHARE and
    waits for neither; every claim stepped over it, and the burst worker, counting it
    runnable, never went idle: drain hung."""
    monkeypatch.setattr(_drain, "LOCK_WAIT", 0.2)
    await t.add.aenqueue(aconn, 1, 1)
    await aconn.commit()
    await aconn.execute(UPDATING[hold])
    running = asyncio.create_task(adrain(t.app, dsn=dsn))
    try:
        async with asyncio.timeout(60):  # the hang fails the test instead of the run
            with pytest.raises(RuntimeError, match="locked by another transaction") as raised:
                await asyncio.shield(running)
    finally:
        await aconn.rollback()  # lets a hung drain end
        await asyncio.wait([running], timeout=60)
    assert f"pid {aconn.info.backend_pid}" in str(raised.value)
    assert (await adrain(t.app, dsn=dsn))["succeeded"] == 1


async def test_drain_waits_out_a_lock_held_briefly(
    aconn, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job row locked for a moment (a worker claiming it) is waited for, not an error."""
    monkeypatch.setattr(_drain, "LOCK_WAIT", 120.0)  # "a moment" on however slow a machine
    await t.add.aenqueue(aconn, 1, 1)
    await aconn.commit()
    await aconn.execute("SELECT id FROM pgqueue.active_jobs FOR UPDATE")
    running = asyncio.create_task(adrain(t.app, dsn=dsn))
    waiting = (
        "SELECT 1 FROM pg_stat_activity"
        " WHERE application_name = 'pgqueue drain' AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(60):
        while not query(dsn, waiting):
            await asyncio.sleep(0.02)
        await aconn.rollback()
        assert (await running)["succeeded"] == 1


def test_drain_steps_over_another_apps_job_enqueued_while_its_round_runs(
    conn, dsn, caplog: pytest.LogCaptureFixture
) -> None:
    """A job of another app's task, committed during a round (here by one of the app's own
    tasks), was claimed by the round's worker and failed as an unknown task, an attempt
    spent; it now stays queued for that app, its attempt given back, and that stand-in
    attempt is in no count: neither drain's nor its worker's worker_stopped line."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    t.hand_over.enqueue(conn, dsn)
    conn.commit()
    assert drain(t.app, dsn=dsn) == _counts(succeeded=1)
    assert query(dsn, "SELECT task, state, attempts, last_error FROM pgqueue.jobs ORDER BY id") == [
        (t.hand_over.name, "succeeded", 1, None), (t.elsewhere.name, "queued", 0, None),
    ]  # fmt: skip
    assert _stopped_lines(caplog) == ["1 succeeded, 0 failed, 0 retried, 0 rescheduled"]
    assert drain(t.other, dsn=dsn)["succeeded"] == 1


def test_drain_keeps_the_apps_middleware_out_of_a_stand_in_attempt(conn, dsn) -> None:
    """The app's middleware ran around the stand-in attempt of another app's job, so that a
    middleware counting or logging the app's attempts saw one of a task it does not have."""
    mine = pgqueue.PgQueue()
    seen: list[str] = []

    @mine.middleware
    async def record(job, call_next):  # type: ignore[no-untyped-def]
        seen.append(job.task)
        return await call_next()

    hand_over = mine.task(name="hand_over")(t.hand_over.fn)
    hand_over.enqueue(conn, dsn)
    conn.commit()
    assert drain(mine, dsn=dsn)["succeeded"] == 1
    stood_aside = (
        "SELECT run_at - created_at >= interval '1 second' FROM pgqueue.jobs WHERE state = 'queued'"
    )
    assert query(dsn, stood_aside) == [(True,)]  # the stand-in attempt did happen
    assert seen == ["hand_over"]


def test_a_test_dsn_naming_no_database_fails_the_tests_saying_what_it_must_name(dsn) -> None:
    """PGQUEUE_TEST_DSN naming a database that does not exist (the one meant for the tests)
    errored every test with psycopg's traceback; they now fail with what it must name."""
    missing = make_conninfo(dsn, dbname="pgqueue_no_such_database")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:asyncio", "-p", "no:timeout",
         "-p", "no:cacheprovider", "examples/testing"],
        cwd=ROOT, env={**os.environ, "PGQUEUE_TEST_DSN": missing},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stdout.splitlines()[-1].startswith("1 passed, 2 errors"), done.stdout
    assert 'database "pgqueue_no_such_database" does not exist); it names an existing' in (
        done.stdout
    )
    assert "psycopg" + os.sep + "connection.py" not in done.stdout  # no traceback


def test_a_blank_test_dsn_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blank PGQUEUE_TEST_DSN (a newline) read as a DSN connected to libpq's defaults."""
    monkeypatch.setenv("PGQUEUE_TEST_DSN", "\n")
    with pytest.raises(pgqueue.ConfigurationError, match="PGQUEUE_TEST_DSN is blank"):
        _testdb.find_server()


class _RefusingEngine(http.server.BaseHTTPRequestHandler):
    """A Docker engine that answers its ping and version, and fails everything else."""

    def _answer(self) -> None:
        path = self.path.split("?")[0]
        if path.endswith("/_ping"):
            status, body = 200, b"OK"
        elif path.endswith("/version"):
            status, body = 200, json.dumps({"ApiVersion": "1.41", "Version": "24.0.0"}).encode()
        else:
            status, body = 500, json.dumps({"message": "this engine starts nothing"}).encode()
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status != 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Api-Version", "1.41")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_HEAD = _answer

    def address_string(self) -> str:
        return "docker.sock"

    def log_message(self, format: str, *args: object) -> None:
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def refusing_docker(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DOCKER_HOST names an engine that answers a ping but cannot start a container."""
    path = str(tmp_path / "docker.sock")
    server = _UnixHTTPServer(path, _RefusingEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.delenv("PGQUEUE_TEST_DSN")
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    yield
    server.shutdown()
    server.server_close()


def test_a_docker_engine_that_cannot_start_postgres_falls_through_with_one_warning(
    refusing_docker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine that answers but cannot start the container raised from the session fixture,
    erroring every test; the search now goes on to the embedded server, with one warning."""
    embedded = _testdb.Server("dbname=embedded", "pgserver")
    monkeypatch.setattr(_testdb, "_from_pgserver", lambda: embedded)
    with pytest.warns(RuntimeWarning) as warned:
        assert _testdb.find_server() is embedded
    [message] = [str(w.message) for w in warned]
    assert message.startswith(
        "a Docker engine answers but testcontainers could not start PostgreSQL in it (APIError:"
    )
    assert '"this engine starts nothing"' in message
    with warnings.catch_warnings(record=True) as caught:  # filterwarnings = error, as ours
        warnings.simplefilter("error")
        assert _testdb.find_server() is embedded  # the warning did not become the error
    assert [str(w.message) for w in caught] == [message]
    assert message.endswith(
        "looking further: set PGQUEUE_TEST_DSN, or install the embedded "
        "server with pip install 'pgqueue[embedded]'"
    )


def test_drain_that_finds_nothing_names_a_session_with_uncommitted_job_writes(conn, dsn) -> None:
    """Jobs the test enqueued and did not commit are invisible to drain, which ran nothing and
    said nothing; it now warns, naming the session whose open transaction wrote jobs."""
    t.add.enqueue(conn, 1, 2)
    with pytest.warns(RuntimeWarning, match="has not committed") as warned:
        assert drain(t.app, dsn=dsn) == _counts()
    assert f"pid {conn.info.backend_pid}" in str(warned[0].message)
    assert warned[0].filename == __file__  # the caller's line, for its warning filters
    conn.commit()
    assert drain(t.app, dsn=dsn)["succeeded"] == 1
    assert drain(t.app, dsn=dsn)["succeeded"] == 0  # nothing left, nothing held: no warning


ROOT = Path(__file__).resolve().parents[2]  # where ``tests`` can be imported from

_ENQUEUE_AND_WAIT = """
import sys, psycopg
from tests.contrib import testing_tasks as t
with psycopg.connect(sys.argv[1]) as conn:
    t.add.enqueue(conn, 1, 2)
    print(conn.info.backend_pid, flush=True)
    sys.stdin.read()
"""


def test_drain_leaves_out_another_processes_uncommitted_job_writes(dsn) -> None:
    """A session of another process idling in a transaction that wrote jobs (another
    pytest-xdist worker's test, on a shared database) was named in drain's warning, which
    failed the test under filterwarnings = error: only this process's sessions are named."""
    other = subprocess.Popen(
        [sys.executable, "-c", _ENQUEUE_AND_WAIT, dsn],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip().isdigit()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert drain(t.app, dsn=dsn)["succeeded"] == 0
    finally:
        other.communicate("")
    assert other.returncode == 0
    assert drain(t.app, dsn=dsn)["succeeded"] == 1  # committed as its connection closed


def test_adrain_run_as_a_task_of_its_own_warns_at_the_line_that_started_it(conn, dsn) -> None:
    """adrain() run by asyncio.run (its own task) has no awaiting line: its warning named a
    line of asyncio's, which the caller's filters missed; it now names the asyncio.run line."""
    t.add.enqueue(conn, 1, 2)
    with pytest.warns(RuntimeWarning, match="has not committed") as warned:
        asyncio.run(adrain(t.app, dsn=dsn))  # the line warned at
    assert warned[0].filename == __file__
    with open(__file__) as source:
        assert source.read().splitlines()[warned[0].lineno - 1].endswith("# the line warned at")


class _Lazy:
    """A lazy proxy, as Django's settings and SimpleLazyObject are: asking its ``__class__``
    sets it up, which may raise (settings not configured) or query the database."""

    set_up = 0

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # type: ignore[override]
        _Lazy.set_up += 1
        raise RuntimeError("a lazy object was set up")


def test_drain_looking_for_its_own_sessions_sets_up_no_lazy_object(conn, dsn) -> None:
    """Looking for this process's connections, drain asked every live object isinstance(),
    which reads a proxy's ``__class__``: an unconfigured Django settings object raised
    ImproperlyConfigured out of drain, a SimpleLazyObject was evaluated."""
    lazy = _Lazy()
    t.add.enqueue(conn, 1, 2)
    with pytest.warns(RuntimeWarning, match="has not committed"):
        drain(t.app, dsn=dsn)
    assert _Lazy.set_up == 0
    del lazy


def test_drain_finds_its_own_sessions_without_walking_every_live_object(
    conn, dsn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naming the test's own uncommitted session, drain looked for this process's connections
    among all live objects (gc.get_objects), 55 ms in a process holding a million: it now
    reads the connections pgqueue ran on, which it keeps."""

    def walked(*args: object, **kwargs: object) -> list[object]:
        raise AssertionError("drain() walked every live object")

    monkeypatch.setattr(gc, "get_objects", walked)
    monkeypatch.setattr(gc, "get_referrers", walked)
    t.add.enqueue(conn, 1, 2)
    with pytest.warns(RuntimeWarning, match=f"pid {conn.info.backend_pid} "):
        drain(t.app, dsn=dsn)


async def test_the_connections_drain_looks_among_are_held_weakly(dsn) -> None:
    """The connections kept for drain's warning, sync and async, are not kept alive by it,
    and a closed one is not named."""
    sync = psycopg.connect(dsn)
    asynchronous = await psycopg.AsyncConnection.connect(dsn)
    t.add.enqueue(sync, 1, 2)
    await t.add.aenqueue(asynchronous, 1, 2)
    pids = {sync.info.backend_pid, asynchronous.info.backend_pid}
    assert pids <= _connections.watched_backends()
    sync.close()
    await asynchronous.close()
    assert not pids & _connections.watched_backends()
    refs = [weakref.ref(sync), weakref.ref(asynchronous)]
    del sync, asynchronous
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


async def _ask_again() -> None:
    raise pgqueue.Retry()


@pytest.mark.timeout(60)
def test_drain_ends_a_task_whose_task_group_always_asks_to_run_again(conn, dsn) -> None:
    """A Retry inside an exception group (an asyncio.TaskGroup's) is a retry to the worker
    but was not counted by drain: due at once, one round's burst worker ran it forever."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="grouped_again")
    async def grouped_again() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(_ask_again())

    grouped_again.enqueue(conn)
    conn.commit()
    counts = drain(app, max_rounds=3)
    assert counts == _counts(rescheduled=3)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]


def test_a_test_dsn_libpq_cannot_parse_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PGQUEUE_TEST_DSN libpq cannot parse failed the tests with "invalid database DSN",
    naming no setting, where one it cannot connect with names PGQUEUE_TEST_DSN."""
    monkeypatch.setenv("PGQUEUE_TEST_DSN", "dbname=test foo=bar")
    with pytest.raises(pgqueue.ConfigurationError) as raised:
        _testdb.find_server()
    assert str(raised.value).startswith("PGQUEUE_TEST_DSN: invalid database DSN: invalid conn")


def test_drain_names_a_middleware_that_returns_no_awaitable(conn, dsn) -> None:
    """drain wraps the app's middleware (to pass over stand-in attempts), and the wrapper
    awaited what a sync middleware returned: the job's error was Python's "object NoneType
    can't be used in 'await' expression", where a worker's names the middleware."""
    app = pgqueue.PgQueue(dsn)

    @app.middleware
    def forgetful(job, call_next):  # type: ignore[no-untyped-def]
        call_next()  # a coroutine never awaited, and no awaitable returned

    add = app.task(name=t.add.name, max_attempts=1)(t.add.fn)
    add.enqueue(conn, 1, 2)
    conn.commit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the coroutine never awaited
        assert drain(app)["failed"] == 1
    [(error,)] = query(dsn, "SELECT last_error FROM pgqueue.jobs")
    assert error.startswith("TypeError: middleware ")
    assert "forgetful returned NoneType, not an awaitable" in error


def test_drains_look_at_the_connections_kept_while_another_thread_enqueues(dsn) -> None:
    """drain's look at the connections pgqueue ran on iterated the set keeping them while
    another thread of the test (a live server's, a thread task's) enqueued on a connection
    new to it: the set changed size during the iteration, and drain raised RuntimeError."""
    opened: list[psycopg.Connection[object]] = []
    done = threading.Event()

    def enqueue_on_new_connections() -> None:
        try:
            for _ in range(80):
                with psycopg.connect(dsn) as conn:  # closed, and still kept (weakly)
                    t.add.enqueue(conn, 1, 2)
                opened.append(conn)
        finally:
            done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns often: the look meets the adds
    other = threading.Thread(target=enqueue_on_new_connections)
    other.start()
    try:
        while not done.is_set():
            _connections.watched_backends()
    finally:
        sys.setswitchinterval(interval)
        other.join()
    assert len(opened) == 80
