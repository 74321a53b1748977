"""app.wait / wait_sync outlive a lost connection: a restart, a failover, a proxy's timeout."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import pgqueue
from tests.faults.proxy import ReplyCutter
from tests.helpers import query, run_worker_until, states
from tests.integration.test_ops_api import make_app, worker

# The waiters' registration: pg_advisory_lock_shared(7403158, s) in LISTEN_FINISHED, in this
# test's database (pg_locks shows the whole server's, where other test runs may wait too).
_REGISTERED = (
    " FROM pg_locks WHERE locktype = 'advisory' AND classid = 7403158"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
WAITERS = "SELECT DISTINCT pid" + _REGISTERED
END_WAITERS = "SELECT pg_terminate_backend(pid)" + _REGISTERED


def end_waiter_sessions(dsn: str) -> None:
    """Wait for a waiter to register, then end its server session as a restart would."""
    for _ in range(200):
        if pids := [pid for (pid,) in query(dsn, WAITERS)]:
            query(dsn, "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
            return
        time.sleep(0.05)
    raise AssertionError("no waiter registered")


async def test_wait_connects_again_and_returns_the_job_finished_after_its_session_ended(
    dsn: str, conn: Any
) -> None:
    """A waiter whose session ended raised OperationalError to the request waiting on it;
    it now connects again, LISTENs again, and returns the job once it finishes."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 20, 22)
    conn.commit()
    waiter = asyncio.create_task(app.wait(job_id, timeout=30, poll_interval=60))
    await asyncio.to_thread(end_waiter_sessions, dsn)
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 1})
    job = await asyncio.wait_for(waiter, 20)  # the notification, not the 60 s poll
    assert (job.state, job.result) == ("succeeded", 42)


async def test_wait_sync_connects_again_after_its_session_ended(dsn: str, conn: Any) -> None:
    """wait_sync, as wait: a lost session is made again, and the outcome is not missed."""
    app = make_app(dsn)
    job_id = app.using("boom").enqueue(conn)
    conn.commit()
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(_outcome(app, job_id)))
    thread.start()
    await asyncio.to_thread(end_waiter_sessions, dsn)
    await run_worker_until(worker(app), lambda: states(dsn) == {"failed": 1})
    await asyncio.to_thread(thread.join, 20)
    assert [getattr(r, "state", r) for r in result] == ["failed"]


def _outcome(app: pgqueue.PgQueue, job_id: int) -> Any:
    try:
        return app.wait_sync(job_id, timeout=30, poll_interval=60)
    except Exception as exc:  # the assertion shows it
        return exc


async def test_a_wait_whose_session_keeps_ending_times_out_at_its_deadline(
    dsn: str, conn: Any
) -> None:
    """Sessions ended again and again: the waiter reconnects until its timeout, then raises
    TimeoutError from the connection's error, on time."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 1, 2)
    conn.commit()
    started = time.monotonic()
    waiter = asyncio.create_task(app.wait(job_id, timeout=2, poll_interval=0.2))
    while not waiter.done():
        await asyncio.to_thread(query, dsn, END_WAITERS)
        await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError) as raised:
        await waiter
    assert 2 <= time.monotonic() - started < 10
    assert raised.value.__cause__ is None or isinstance(raised.value.__cause__, psycopg.Error)


async def test_a_first_connection_that_fails_raises_at_once() -> None:
    """No server there: the DSN may be wrong, so the waiter says so at once, without a
    timeout to wait for, instead of trying for ever."""
    app = pgqueue.PgQueue("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(psycopg.OperationalError):
        await asyncio.wait_for(app.wait(1), 10)
    with pytest.raises(psycopg.OperationalError):
        app.wait_sync(1)


async def test_a_wait_whose_new_connection_hangs_times_out_near_its_deadline(
    dsn: str, conn: Any
) -> None:
    """The session lost, the server took the new connection and never answered (a hung
    proxy, a failover): the connect waited psycopg's 130 s, far past the request's timeout.
    A waiter's connect now gives up by its deadline (2 s at the least, libpq's floor)."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 1, 2)
    conn.commit()
    async with ReplyCutter(with_application(dsn, "waiter"), b"pgqueue.jobs", b"waiter") as cut:
        cut.gate.clear()  # connections after the cut wait, unanswered
        waiter = pgqueue.PgQueue(cut.dsn)
        started = time.monotonic()
        task = asyncio.create_task(waiter.wait(job_id, timeout=3, poll_interval=0.2))
        await asyncio.sleep(0.5)
        cut.deliver, cut.armed = False, True  # the next read is lost, with its connection
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(task, 30)
        assert time.monotonic() - started < 8
        assert cut.cut.is_set()
        cut.gate.set()


def with_application(dsn: str, name: str) -> str:
    """``dsn`` naming its sessions ``name`` (what ReplyCutter picks its connections by)."""
    return make_conninfo(dsn, application_name=name)


@pytest.mark.parametrize(
    ("blocking", "listen"), [(False, True), (True, True), (False, False), (True, False)],
    ids=["async", "sync", "async-polling", "sync-polling"],
)  # fmt: skip
async def test_a_wait_whose_read_waits_for_a_lock_times_out_on_time(
    dsn: str, conn: Any, blocking: bool, listen: bool
) -> None:
    """An operator's VACUUM FULL (or a migration) holding the history's lock held each read
    of a waiter, and the request behind it, past its timeout for as long as it ran (here
    8 s); a read is now bounded by what is left of the timeout: TimeoutError on time."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 1, 2)
    conn.commit()
    locked = threading.Event()
    holder = threading.Thread(target=hold_the_history, args=(dsn, locked, 8.0))
    holder.start()
    locked.wait(10)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        if blocking:
            await asyncio.to_thread(app.wait_sync, job_id, timeout=1, listen=listen)
        else:
            await app.wait(job_id, timeout=1, listen=listen)
    elapsed = time.monotonic() - started
    await asyncio.to_thread(holder.join, 20)
    assert elapsed < 5
    assert str(raised.value) == f"job {job_id} did not finish within 1 s"


def hold_the_history(dsn: str, locked: threading.Event, seconds: float) -> None:
    """Hold pgqueue.finished_jobs locked for ``seconds``, as VACUUM FULL would."""
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE pgqueue.finished_jobs IN ACCESS EXCLUSIVE MODE")
        locked.set()
        time.sleep(seconds)
