"""The async waiters of an app on one event loop share one connection (pgqueue/_wait_hub.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _wait_hub
from tests.faults.proxy import Blackout
from tests.helpers import query, run_worker_until, states, wait_blocked
from tests.integration.test_ops_api import make_app, worker
from tests.integration.test_wait_reconnects import WAITERS, hold_the_history, with_application

HUB = "pgqueue-hub-test"  # the application_name of the waiters' sessions
# In this test's database: pg_stat_activity shows the whole server's, other test runs' too.
SESSIONS = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()"
)


def sessions(dsn: str) -> list[int]:
    """The backends of the waiters' connections."""
    return [pid for (pid,) in query(dsn, SESSIONS, [HUB])]


def enqueue_adds(app: pgqueue.PgQueue, conn: Any, n: int) -> list[int]:
    """``n`` jobs add(i, i), committed."""
    ids = [app.using("add").enqueue(conn, i, i) for i in range(n)]
    conn.commit()
    return ids


def a_cancelled_job(app: pgqueue.PgQueue, conn: Any) -> int:
    """A job add(0, 0) cancelled, committed: finished, for waits that return at once."""
    [job_id] = enqueue_adds(app, conn, 1)
    assert app.cancel(conn, job_id) == "cancelled"
    conn.commit()
    return job_id


async def registered(dsn: str, count: int = 1) -> list[int]:
    """Until ``count`` backends are registered as waiters: their pids."""
    for _ in range(400):
        if len(pids := [pid for (pid,) in await asyncio.to_thread(query, dsn, WAITERS)]) >= count:
            return pids
        await asyncio.sleep(0.025)
    raise AssertionError("no waiter registered")


async def test_two_hundred_waiters_share_one_connection_and_get_their_jobs(
    dsn: str, conn: Any
) -> None:
    """200 requests waiting at once held 200 server connections, past max_connections (100):
    they now share one, registered once, and each gets its own job as the worker ends it."""
    app = make_app(dsn)
    ids = enqueue_adds(app, conn, 200)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    waits = asyncio.gather(*(waiter.wait(i, timeout=60, poll_interval=60) for i in ids))
    await registered(dsn)
    seen = [len(await asyncio.to_thread(sessions, dsn)) for _ in range(5)]
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 200})
    jobs = await asyncio.wait_for(waits, 30)  # the notifications, not the 60 s poll
    assert seen == [1] * 5
    assert len(query(dsn, WAITERS)) == 0 and sessions(dsn) == []  # closed once all returned
    assert [(j.id, j.state, j.result) for j in jobs] == [
        (i, "succeeded", 2 * n) for n, i in enumerate(ids)
    ]


async def test_a_cancelled_waiter_leaves_the_others_waiting(dsn: str, conn: Any) -> None:
    """One waiter cancelled (its request gone) while others wait: the shared connection and
    its registration stay as they were, and the others get their jobs."""
    app = make_app(dsn)
    ids = enqueue_adds(app, conn, 3)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    tasks = [asyncio.create_task(waiter.wait(i, timeout=60, poll_interval=60)) for i in ids]
    before = await registered(dsn)
    tasks[0].cancel()
    timed_out = asyncio.wait_for(waiter.wait(ids[1], timeout=60, poll_interval=60), 0.3)
    await asyncio.gather(tasks[0], timed_out, return_exceptions=True)
    assert await asyncio.to_thread(query, dsn, WAITERS) == [(pid,) for pid in before]
    assert await asyncio.to_thread(sessions, dsn) == before
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 3})
    jobs = await asyncio.wait_for(asyncio.gather(*tasks[1:]), 20)
    assert [(j.id, j.result) for j in jobs] == [(ids[1], 2), (ids[2], 4)]
    assert tasks[0].cancelled()


async def test_waiters_get_their_jobs_when_the_shared_session_is_ended(dsn: str, conn: Any) -> None:
    """The shared connection's session ended (a restart, a failover) while jobs finish: it is
    made again, every waited job is read again, and no outcome is missed."""
    app = make_app(dsn)
    ids = enqueue_adds(app, conn, 20)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    waits = asyncio.gather(*(waiter.wait(i, timeout=60, poll_interval=60) for i in ids))
    [pid] = await registered(dsn)
    runner = asyncio.create_task(run_worker_until(worker(app), lambda: states(dsn) == {
        "succeeded": 20}))  # fmt: skip
    await asyncio.to_thread(query, dsn, "SELECT pg_terminate_backend(%s)", [pid])
    jobs = await asyncio.wait_for(waits, 20)  # not the 60 s poll
    await runner
    assert [(j.id, j.result) for j in jobs] == [(i, 2 * n) for n, i in enumerate(ids)]


async def test_the_connection_is_closed_when_the_last_waiter_leaves(dsn: str, conn: Any) -> None:
    """The last waiter to go (its job finished, or timed out) closes the shared connection
    before it returns; the next wait opens one again."""
    app = make_app(dsn)
    [job_id] = enqueue_adds(app, conn, 1)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await waiter.wait(job_id, timeout=0.3, poll_interval=0.05)
        assert time.monotonic() - started < 3
        assert await asyncio.to_thread(sessions, dsn) == []
    assert app.cancel(conn, job_id) == "cancelled"
    conn.commit()
    assert (await waiter.wait(job_id, timeout=5)).state == "cancelled"
    assert await asyncio.to_thread(sessions, dsn) == []


def test_waiters_on_two_event_loops_each_get_their_jobs(dsn: str, conn: Any) -> None:
    """Two threads, each with its loop and its waiters: a connection each (a hub belongs to
    one loop), and every waiter gets its job."""
    app = make_app(dsn)
    ids = enqueue_adds(app, conn, 10)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    results: list[Any] = []

    def wait_for(some: list[int]) -> None:
        async def waits() -> list[pgqueue.Job]:
            return await asyncio.gather(*(waiter.wait(i, timeout=30) for i in some))

        try:
            results.extend(asyncio.run(waits()))
        except Exception as exc:  # the assertion shows it
            results.append(exc)

    threads = [threading.Thread(target=wait_for, args=(ids[k::2],)) for k in range(2)]
    for thread in threads:
        thread.start()
    asyncio.run(registered(dsn, 1))
    for _ in range(100):
        if len(sessions(dsn)) == 2:
            break
        time.sleep(0.05)
    assert len(sessions(dsn)) == 2
    asyncio.run(run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 10}))
    for thread in threads:
        thread.join(20)
    assert sorted((j.id, j.result) for j in results) == [(i, 2 * n) for n, i in enumerate(ids)]


async def test_a_forked_child_forgets_the_parents_hub(dsn: str, conn: Any) -> None:
    """A child forked while the parent waits starts without its parent's hubs (its waits
    would otherwise join a hub whose connection the parent owns), and the parent's waiter
    still gets its job."""
    app = make_app(dsn)
    [job_id] = enqueue_adds(app, conn, 1)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    task = asyncio.create_task(waiter.wait(job_id, timeout=30, poll_interval=60))
    await registered(dsn)
    if (child := os.fork()) == 0:
        os._exit(0 if not _wait_hub._hubs else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert app.cancel(conn, job_id) == "cancelled"
    conn.commit()
    assert (await asyncio.wait_for(task, 10)).state == "cancelled"


async def test_a_notification_not_pgqueues_on_the_channel_wakes_no_one_wrongly(
    dsn: str, conn: Any
) -> None:
    """Someone else's NOTIFY pgqueue_finished, 'hello': the waiters went on waiting for their
    jobs (a payload that is not a list of ids names none of them)."""
    app = make_app(dsn)
    ids = enqueue_adds(app, conn, 3)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    waits = asyncio.gather(*(waiter.wait(i, timeout=60, poll_interval=60) for i in ids))
    await registered(dsn)
    await asyncio.to_thread(query, dsn, "SELECT pg_notify('pgqueue_finished', 'hello,²,-1')")
    await asyncio.sleep(0.2)
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 3})
    jobs = await asyncio.wait_for(waits, 20)
    assert [(j.id, j.result) for j in jobs] == [(i, 2 * n) for n, i in enumerate(ids)]


async def test_the_hubs_task_cancelled_leaves_its_waiters_waiting(dsn: str, conn: Any) -> None:
    """The hub's own task cancelled by someone else (code that cancels every task but its
    own) left its waiters, and every later waiter of that loop, waiting for ever on a hub
    that no longer read: the task is made again, and each waiter gets its job."""
    app = make_app(dsn)
    ids = enqueue_adds(app, conn, 2)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    first = asyncio.create_task(waiter.wait(ids[0], timeout=60, poll_interval=60))
    await registered(dsn)
    [hub] = _wait_hub._hubs.values()
    assert hub.runner is not None
    hub.runner.cancel()
    await asyncio.wait((hub.runner,))
    second = asyncio.create_task(waiter.wait(ids[1], timeout=60, poll_interval=60))
    assert [app.cancel(conn, i) for i in ids] == ["cancelled", "cancelled"]
    conn.commit()
    jobs = await asyncio.wait_for(asyncio.gather(first, second), 20)  # not the 60 s timeout
    assert [(j.id, j.state) for j in jobs] == [(i, "cancelled") for i in ids]
    assert await asyncio.to_thread(sessions, dsn) == []


async def test_a_job_finished_while_the_hub_reads_another_is_not_missed(
    dsn: str, conn: Any
) -> None:
    """A job finished while the shared connection read another (held here by a lock on the
    history): its notification came during that read, which psycopg before 3.2.4 dropped, so
    the waiter learnt of it only at the poll, 60 s on. It is kept, and the job read."""
    app = make_app(dsn)
    first, second = enqueue_adds(app, conn, 2)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    waits = [asyncio.create_task(waiter.wait(first, timeout=60, poll_interval=60))]
    [pid] = await registered(dsn)
    conn.execute("LOCK TABLE pgqueue.finished_jobs IN ACCESS EXCLUSIVE MODE")
    waits.append(asyncio.create_task(waiter.wait(second, timeout=60, poll_interval=60)))
    await asyncio.to_thread(wait_blocked, dsn, pid)  # the read of the second job
    assert app.cancel(conn, first) == "cancelled"
    conn.commit()  # the notification, as the read goes on
    assert (await asyncio.wait_for(waits[0], 10)).state == "cancelled"  # not the 60 s poll
    assert app.cancel(conn, second) == "cancelled"
    conn.commit()
    assert (await asyncio.wait_for(waits[1], 10)).state == "cancelled"


async def test_a_waiter_that_polls_sooner_is_polled_for_from_when_it_joins(
    dsn: str, conn: Any
) -> None:
    """A waiter polling every 0.2 s joined a hub polling every 60 s: the hub kept to its
    next poll, 60 s on, so a change no notification told of (here the row deleted by hand)
    reached it a minute late. The poll now comes by the new waiter's interval."""
    app = make_app(dsn)
    slow, quick = enqueue_adds(app, conn, 2)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    first = asyncio.create_task(waiter.wait(slow, timeout=60, poll_interval=60))
    await registered(dsn)
    second = asyncio.create_task(waiter.wait(quick, timeout=60, poll_interval=0.2))
    await asyncio.sleep(0.5)  # its first read is done: the job is queued
    await asyncio.to_thread(query, dsn, "DELETE FROM pgqueue.active_jobs WHERE id = %s", [quick])
    with pytest.raises(pgqueue.JobStateError, match=f"^there is no job {quick}:"):
        await asyncio.wait_for(second, 5)  # not the first waiter's 60 s poll
    assert app.cancel(conn, slow) == "cancelled"
    conn.commit()
    assert (await asyncio.wait_for(first, 10)).state == "cancelled"


def test_a_child_forked_while_a_thread_looks_a_hub_up_can_wait(dsn: str, conn: Any) -> None:
    """A fork while another thread held the lock on the hubs (looking its loop's hub up)
    gave the child that lock held by no one: its first wait blocked for ever. The child
    starts with the lock free."""
    app = make_app(dsn)
    job_id = a_cancelled_job(app, conn)
    with _wait_hub._hubs_lock:  # as the other thread would, at the moment of the fork
        if (child := os.fork()) == 0:
            job = asyncio.run(app.wait(job_id, timeout=5))
            os._exit(0 if job.state == "cancelled" else 1)
    for _ in range(200):
        if (ended := os.waitpid(child, os.WNOHANG))[0]:
            assert os.waitstatus_to_exitcode(ended[1]) == 0
            return
        time.sleep(0.05)
    os.kill(child, 9)
    os.waitpid(child, 0)
    raise AssertionError("the child's wait never returned")


async def test_waiters_of_one_job_each_get_a_job_of_their_own(dsn: str, conn: Any) -> None:
    """Two requests waiting for the same job got the same Job, so one that changed its
    result or meta (dicts, lists) changed the other's, as a wait of its own never did."""
    app = make_app(dsn)
    [job_id] = enqueue_adds(app, conn, 1)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    waits = asyncio.gather(*(waiter.wait(job_id, timeout=30, poll_interval=60) for _ in "ab"))
    await registered(dsn)
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 1})
    first, second = await asyncio.wait_for(waits, 20)
    first.meta["seen_by"] = "first"
    first.errors.append({"by": "first"})
    assert (second.meta, second.errors) == ({}, [])
    assert (first.id, first.state, second.id, second.state) == (job_id, "succeeded") * 2


async def out_of_reach(proxy: Blackout) -> None:
    """Black ``proxy`` out, until the hub has lost its connection and failed to make it again
    (it then waits its poll interval before it tries again)."""
    [hub] = _wait_hub._hubs.values()
    proxy.black_out()
    for _ in range(400):
        if hub.failures >= 2:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the hub did not try to connect again")


async def test_a_waiter_that_joins_during_an_outage_raises_at_once(dsn: str, conn: Any) -> None:
    """The shared connection lost and the database out of reach: a new waiter waited, with
    the others, for the hub's next try (a minute here; for ever without a timeout), where a
    first connection that fails raises psycopg's error at once. It raises it at once, and the
    waiter that had a connection waits on."""
    async with an_outage(dsn, conn) as (waiter, new_job):
        with pytest.raises(psycopg.OperationalError):
            await asyncio.wait_for(waiter.wait(new_job), 10)
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def an_outage(dsn: str, conn: Any) -> AsyncIterator[tuple[pgqueue.PgQueue, int]]:
    """A waiter connected through a proxy, then the database out of reach: yields the app
    it waits with and a job for another waiter; the first one still waits at the end."""
    app = make_app(dsn)
    old_job, new_job = enqueue_adds(app, conn, 2)
    async with Blackout(with_application(dsn, HUB)) as proxy:
        waiter = pgqueue.PgQueue(proxy.dsn)
        old = asyncio.create_task(waiter.wait(old_job, timeout=60, poll_interval=60))
        try:
            await registered(dsn)
            await out_of_reach(proxy)
            yield waiter, new_job
            assert not old.done()
        finally:
            old.cancel()
            await asyncio.gather(old, return_exceptions=True)


async def test_a_waiter_that_joins_once_the_database_is_back_is_read_at_once(
    dsn: str, conn: Any
) -> None:
    """After an outage the hub tries to connect again every poll interval (a minute here): a
    waiter that joined once the database was back waited for that try, where a connection of
    its own read its job at once. Its join has the hub connect at once, and the waiter that
    waited through the outage gets its job too."""
    app = make_app(dsn)
    ids = enqueue_adds(app, conn, 2)
    async with Blackout(with_application(dsn, HUB)) as proxy:
        waiter = pgqueue.PgQueue(proxy.dsn)
        old = asyncio.create_task(waiter.wait(ids[0], timeout=60, poll_interval=60))
        await registered(dsn)
        await out_of_reach(proxy)
        proxy.down = False
        assert [app.cancel(conn, i) for i in ids] == ["cancelled", "cancelled"]
        conn.commit()
        new = asyncio.create_task(waiter.wait(ids[1], timeout=60, poll_interval=60))
        jobs = await asyncio.wait_for(asyncio.gather(old, new), 10)  # not the 60 s retry
        assert [(j.id, j.state) for j in jobs] == [(i, "cancelled") for i in ids]


@pytest.mark.parametrize("another_wait", [True, False])
def test_a_loop_closed_with_its_waiters_pending_keeps_no_session(
    dsn: str, conn: Any, another_wait: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop closed without cancelling its tasks (its waiters pending) left its hub among the
    hubs for the life of the process: its session stayed open and registered, and every
    statement that finished jobs notified for it. Then the next wait forgot it: a process
    that waited no more kept it for its life. The hubs hold their hubs weakly: its
    connection goes with its tasks once garbage is collected, another wait or not."""
    # The waiters' coroutines, closed by the collector, raise "Event loop is closed": pytest's
    # hook keeps that error, whose frames hold the hub (and now and then kept its session
    # open, and the hub among the hubs of the tests after). Python's own hook prints it.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    app = make_app(dsn)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    other = a_cancelled_job(app, conn)
    [pending] = enqueue_adds(app, conn, 1)
    loop = asyncio.new_event_loop()
    task = loop.create_task(waiter.wait(pending, timeout=60))
    loop.run_until_complete(registered(dsn))
    loop.close()
    del task, loop
    if another_wait:
        assert asyncio.run(waiter.wait(other, timeout=10)).state == "cancelled"
    gc.collect()
    for _ in range(100):
        if not sessions(dsn):
            break
        time.sleep(0.05)
    assert (sessions(dsn), query(dsn, WAITERS)) == ([], [])


async def test_a_waiter_is_not_given_a_read_made_before_it_came(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter that came while the hub read its job for another waiter (here held once the
    rows are in) was given that read, older than its call: the job cancelled then, retried
    since, came back cancelled, where a wait of its own would wait for the retried job's
    outcome. It is read again, and waits on."""
    app = make_app(dsn)
    job_id = a_cancelled_job(app, conn)
    read, go_on = asyncio.Event(), asyncio.Event()
    original = _wait_hub._Hub._rows

    async def held(*args: Any) -> Any:
        rows = await original(*args)
        read.set()
        await go_on.wait()
        return rows

    monkeypatch.setattr(_wait_hub._Hub, "_rows", held)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    first = asyncio.create_task(waiter.wait(job_id, timeout=30, poll_interval=60))
    await asyncio.wait_for(read.wait(), 10)
    app.retry(conn, job_id)
    conn.commit()
    second = asyncio.create_task(waiter.wait(job_id, timeout=30, poll_interval=60))
    await asyncio.sleep(0.1)  # it has joined
    go_on.set()
    assert (await asyncio.wait_for(first, 10)).state == "cancelled"  # its read: before the retry
    await asyncio.sleep(0.3)
    assert not second.done()  # queued again when it came
    assert app.cancel(conn, job_id) == "cancelled"
    conn.commit()
    assert (await asyncio.wait_for(second, 10)).state == "cancelled"


async def test_a_timeout_of_years_is_no_error(dsn: str, conn: Any) -> None:
    """A timeout past 24.8 days (lock_timeout's range, in ms) bounded the reads by a value
    PostgreSQL refused: the wait raised InvalidParameterValue, and with it every waiter of
    the shared connection. The bound stops at PostgreSQL's largest: each gets its job."""
    app = make_app(dsn)
    job_id = a_cancelled_job(app, conn)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    waits = [waiter.wait(job_id, timeout=t) for t in (1e10, 60)]
    jobs = await asyncio.wait_for(asyncio.gather(*waits), 10)
    assert [j.state for j in jobs] == ["cancelled", "cancelled"]
    for listen in (True, False):
        job = await asyncio.to_thread(waiter.wait_sync, job_id, timeout=1e10, listen=listen)
        assert job.state == "cancelled"


def closed_port_dsn() -> str:
    """A DSN to a local port nothing listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nowhere?connect_timeout=5"


@pytest.mark.parametrize("where", ["refused", "not migrated"])
async def test_each_waiter_raises_an_error_of_its_own(empty_dsn: str, where: str) -> None:
    """The hub's error was one exception object in all its waiters: a note one caller added,
    or a traceback it cleared, showed in the others. Each raises its own, the same error."""
    waiter = pgqueue.PgQueue(closed_port_dsn() if where == "refused" else empty_dsn)
    first, second = await asyncio.gather(
        waiter.wait(1, timeout=10), waiter.wait(2, timeout=10), return_exceptions=True
    )
    assert isinstance(first, psycopg.Error) and isinstance(second, psycopg.Error)
    first.add_note("seen by the first caller")
    first.with_traceback(None)
    assert first is not second and type(first) is type(second)
    assert str(first) == str(second) and getattr(second, "__notes__", []) == []
    assert second.__traceback__ is not None
    assert (second.sqlstate, second.diag.message_primary) == (
        first.sqlstate, first.diag.message_primary)  # fmt: skip
    if where == "not migrated":
        assert second.sqlstate == "42P01"  # undefined_table


async def test_each_waiter_timed_out_by_a_read_has_a_cause_of_its_own(dsn: str, conn: Any) -> None:
    """Two waiters whose read was stopped by a lock held on the history: their TimeoutErrors
    had the one database error as their cause; each has its own, the same error."""
    app = make_app(dsn)
    ids = enqueue_adds(app, conn, 2)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    locked = threading.Event()
    holder = threading.Thread(target=hold_the_history, args=(dsn, locked, 3.0))
    holder.start()
    locked.wait(10)
    waits = [waiter.wait(i, timeout=1, poll_interval=60) for i in ids]
    first, second = await asyncio.gather(*waits, return_exceptions=True)
    await asyncio.to_thread(holder.join, 20)
    assert isinstance(first, TimeoutError) and isinstance(second, TimeoutError)
    assert isinstance(
        first.__cause__, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
    )
    assert first.__cause__ is not second.__cause__
    assert type(first.__cause__) is type(second.__cause__)
    assert str(first.__cause__) == str(second.__cause__)


class GatedConnects:
    """psycopg's async connect, counted, held at a gate until :attr:`open` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls, self.open = 0, asyncio.Event()
        self.real = psycopg.AsyncConnection.connect.__func__  # type: ignore[attr-defined]
        monkeypatch.setattr(psycopg.AsyncConnection, "connect", classmethod(self._connect))

    async def _connect(self, cls: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        await self.open.wait()
        return await self.real(cls, *args, **kwargs)

    async def in_flight(self, count: int) -> None:
        """Until ``count`` attempts have started."""
        for _ in range(400):
            if self.calls >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{self.calls} connect attempts, not {count}")


async def joined_during_one_attempt(waiter: pgqueue.PgQueue, connects: GatedConnects) -> None:
    """Ten waiters join while one connect attempt is in flight: each raises its error, and
    that one attempt is the only one made."""
    before = connects.calls
    first = asyncio.create_task(waiter.wait(1, timeout=10, poll_interval=60))
    await connects.in_flight(before + 1)
    others = [asyncio.create_task(waiter.wait(i, timeout=10)) for i in range(2, 11)]
    await asyncio.sleep(0.2)
    connects.open.set()
    raised = await asyncio.gather(first, *others, return_exceptions=True)
    assert [type(e) for e in raised] == [psycopg.OperationalError] * 10
    assert connects.calls == before + 1


async def test_waiters_that_join_while_a_first_connect_is_tried_share_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database out of reach: waiters that come while the first of them connects do not
    each try again (1,000 requests, 1,000 attempts); they share that attempt's error."""
    await joined_during_one_attempt(pgqueue.PgQueue(closed_port_dsn()), GatedConnects(monkeypatch))


async def test_waiters_that_join_while_the_lost_connection_is_tried_share_it(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared connection lost and the database out of reach: the first waiter to come has
    it made again at once; those who come while it is tried share that one attempt, and the
    waiter that had a connection waits on."""
    async with an_outage(dsn, conn) as (waiter, _):
        await joined_during_one_attempt(waiter, GatedConnects(monkeypatch))


async def test_a_waiter_that_joins_a_connection_dead_but_not_noticed_waits_as_the_others(
    dsn: str, conn: Any
) -> None:
    """A waiter that joins as the shared connection dies, before the hub has noticed, is one
    that had a connection (its DSN worked): as the waiters already there, it waits through
    the tries to make it again and raises TimeoutError at its timeout, not psycopg's error."""
    app = make_app(dsn)
    old_job, new_job = enqueue_adds(app, conn, 2)
    async with Blackout(with_application(dsn, HUB)) as proxy:
        waiter = pgqueue.PgQueue(proxy.dsn)
        old = asyncio.create_task(waiter.wait(old_job, timeout=60, poll_interval=0.2))
        await registered(dsn)
        proxy.black_out()  # the hub learns of it once this task yields: the new waiter is first
        new = asyncio.create_task(waiter.wait(new_job, timeout=1, poll_interval=0.2))
        [hub] = _wait_hub._hubs.values()
        with pytest.raises(TimeoutError) as raised:
            await asyncio.wait_for(new, 10)
        assert hub.failures >= 2  # it tried again, and again, while the new waiter waited
        assert isinstance(raised.value.__cause__, psycopg.OperationalError)
        assert not old.done()
        old.cancel()
        await asyncio.gather(old, return_exceptions=True)


async def test_a_waiter_gone_before_a_read_of_its_job_ends_is_given_nothing(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A waiter that timed out while a read of its job went on (held by a lock on the history,
    bounded by another waiter's timeout) was given a TimeoutError once that read ended, which
    no one would retrieve: asyncio logged an ERROR, "Future exception was never retrieved",
    for a timeout its caller had already seen. A waiter gone is given nothing."""
    app = make_app(dsn)
    [job_id] = enqueue_adds(app, conn, 1)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    longer = asyncio.create_task(waiter.wait(job_id, timeout=60, poll_interval=60))
    await registered(dsn)
    conn.execute("LOCK TABLE pgqueue.finished_jobs IN ACCESS EXCLUSIVE MODE")
    with pytest.raises(TimeoutError):  # its first read held, past its timeout
        await waiter.wait(job_id, timeout=0, poll_interval=60)
    conn.commit()
    with pytest.raises(TimeoutError):  # read once the held read has ended
        await waiter.wait(job_id, timeout=0, poll_interval=60)
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not longer.done()
    longer.cancel()
    await asyncio.gather(longer, return_exceptions=True)


async def read_on_for_the_other(
    app: pgqueue.PgQueue, dsn: str, conn: Any, pid: int, job_id: int,
    for_ever: asyncio.Task[Any],
) -> None:  # fmt: skip
    """The shared read still registered for the waiter without a timeout, which gets its job
    once the history's lock (held by ``conn``) goes."""
    assert await asyncio.to_thread(query, dsn, WAITERS) == [(pid,)]  # reading on
    conn.commit()
    assert app.cancel(conn, job_id) == "cancelled"
    conn.commit()
    assert (await asyncio.wait_for(for_ever, 20)).state == "cancelled"


async def test_a_waiter_raises_at_its_timeout_while_a_read_for_one_without_is_held(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter that joined while the hub's read, unbounded for a waiter without a timeout,
    was held by a lock on the history waited for its first read until its first look (3 s,
    made here 10 minutes so that the test cannot pass by it): timeout=0.5 raised then. The
    connection made, it raises as a read of its own would, at its timeout but 1 s at the
    least, and the read goes on for the other waiter."""
    monkeypatch.setattr(_wait_hub, "FIRST_LOOK", 600.0)
    app = make_app(dsn)
    [job_id] = enqueue_adds(app, conn, 1)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    conn.execute("LOCK TABLE pgqueue.finished_jobs IN ACCESS EXCLUSIVE MODE")
    for_ever = asyncio.create_task(waiter.wait(job_id, poll_interval=60))
    [pid] = await registered(dsn)
    await asyncio.to_thread(wait_blocked, dsn, pid)
    with pytest.raises(TimeoutError, match=f"job {job_id} did not finish within 0.5 s"):
        await asyncio.wait_for(waiter.wait(job_id, timeout=0.5, poll_interval=60), 20)
    await read_on_for_the_other(app, dsn, conn, pid, job_id, for_ever)


async def test_a_waiter_come_before_the_connection_raises_at_its_timeout_while_a_read_is_held(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but the waiter with a timeout came with the one without, before the shared
    connection was made (as the first waits of a burst do): it waited for its first look,
    3 s after its call (here 10 minutes), whatever its timeout. A read held for a waiter
    without a timeout brings on the first look of those it reads for: it raises as a read
    of its own would, 1 s after that read began at the most."""
    monkeypatch.setattr(_wait_hub, "FIRST_LOOK", 600.0)
    app = make_app(dsn)
    [job_id] = enqueue_adds(app, conn, 1)
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    connects = GatedConnects(monkeypatch)
    for_ever = asyncio.create_task(waiter.wait(job_id, poll_interval=60))
    soon = asyncio.create_task(waiter.wait(job_id, timeout=0.5, poll_interval=60))
    await connects.in_flight(1)
    conn.execute("LOCK TABLE pgqueue.finished_jobs IN ACCESS EXCLUSIVE MODE")
    connects.open.set()
    [pid] = await registered(dsn)
    await asyncio.to_thread(wait_blocked, dsn, pid)
    with pytest.raises(TimeoutError, match=f"job {job_id} did not finish within 0.5 s"):
        await asyncio.wait_for(soon, 20)
    await read_on_for_the_other(app, dsn, conn, pid, job_id, for_ever)


async def test_a_waiter_that_comes_while_the_last_one_closes_waits_for_the_close(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter that came just after the last one left opened a second connection while the
    first was being closed. It waits for that close (here held at a gate), then connects:
    one connection at a time, and never the one being closed. (Joined to the hub being
    closed, it had its connection made again there, by a hub no longer found: a third
    waiter, come meanwhile, opened another.)"""
    app = make_app(dsn)
    job_id = a_cancelled_job(app, conn)
    closing, go_on = asyncio.Event(), asyncio.Event()
    close = psycopg.AsyncConnection.close

    async def held(self: psycopg.AsyncConnection[Any]) -> None:
        closing.set()
        await go_on.wait()
        await close(self)

    monkeypatch.setattr(psycopg.AsyncConnection, "close", held)
    connects = GatedConnects(monkeypatch)
    connects.open.set()
    waiter = pgqueue.PgQueue(with_application(dsn, HUB))
    first = asyncio.create_task(waiter.wait(job_id, timeout=10))
    await asyncio.wait_for(closing.wait(), 10)
    connects.open.clear()
    second = asyncio.create_task(waiter.wait(job_id, timeout=10))
    await asyncio.sleep(0.3)
    assert connects.calls == 1  # the second waits for the first connection to be closed
    go_on.set()
    await connects.in_flight(2)
    third = asyncio.create_task(waiter.wait(job_id, timeout=10))
    await asyncio.sleep(0.3)
    assert connects.calls == 2  # the third shares the second's connection
    connects.open.set()
    jobs = await asyncio.wait_for(asyncio.gather(first, second, third), 10)
    assert [j.state for j in jobs] == ["cancelled"] * 3
    assert connects.calls == 2
