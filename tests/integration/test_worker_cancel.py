"""run() cancelled from outside (asyncio.timeout, asyncio.run's first Ctrl-C, a TaskGroup) at
the awaits where the worker holds claims the database has committed: the jobs go back at the
stop, as the jobs it runs do, and are not left running until their leases expire."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from pgqueue._store import _queries
from pgqueue._worker import _worker as _worker_module
from pgqueue._worker._executor import JobExecutor
from tests.helpers import cancel_running, query, raise_at, refuse_acks
from tests.integration import tasks_app as t

GUARD = 60  # seconds a worker that should stop by itself gets: only a failing test waits it
SESSIONS = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'pgqueue %'")  # fmt: skip


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (the test's own guard ends a failing wait)."""
    while not condition():
        await asyncio.sleep(0.01)


def actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The actions of the log records so far."""
    return [getattr(r, "action", "") for r in caplog.records]


def hold_until_cut(worker: pgqueue.Worker, statement: str) -> None:
    """Make ``worker``'s maintenance connection wait, before it runs ``statement``, until the
    wait is cancelled (a stop cut short cancels it)."""
    real = worker._maint_db.run

    async def held(query_: Any) -> Any:
        if getattr(query_, "sql", None) is statement:
            await asyncio.Event().wait()
        return await real(query_)

    worker._maint_db.run = held  # type: ignore[method-assign]


async def test_a_claim_whose_reply_a_cancellation_cut_off_gives_its_jobs_back_at_the_stop(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """run() cancelled while a claim runs: psycopg asks the server to cancel the statement,
    which has often committed by then, and raises CancelledError all the same, the claimed
    rows unread. Those jobs stayed running under the stopped worker until their leases
    expired, then ran again with that attempt counted (or failed as 'worker lost' when it was
    their last). The stop now gives them back, attempt not counted, as it does the jobs it
    stopped."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    ids = [t.add.enqueue(conn, n, n) for n in range(3)]
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, lease=3600)
    running = asyncio.ensure_future(worker.run())
    claim_db = worker._claim_db
    original = claim_db.run

    async def cut_off(query_: Any) -> Any:
        result = await original(query_)
        if isinstance(result, _store.Claim) and result.rows:
            running.cancel()  # lands as the reply comes in: the claim has committed
            await asyncio.sleep(0)
        return result

    claim_db.run = cut_off  # type: ignore[method-assign]
    await asyncio.wait([running], timeout=GUARD)
    assert running.cancelled()
    assert query(dsn, "SELECT state, attempts, worker_id FROM pgqueue.jobs WHERE id = ANY(%s)"
                      " GROUP BY 1, 2, 3", [ids]) == [("queued", 0, None)]  # fmt: skip
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []


async def test_run_under_asyncio_timeout_raises_timeouterror_when_the_last_writes_fail(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """run() under asyncio.timeout, whose cancellation comes before any stop() and whose
    stop's last writes then fail (the database refuses every ack here): PgQueueError went
    out in the CancelledError's place, so that asyncio.timeout gave its caller PgQueueError,
    not TimeoutError (and asyncio.run's Ctrl-C no KeyboardInterrupt). The cancellation goes
    on; the outcome left unwritten is logged (outcome_unwritten) as at any stop."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, ack_interval=20)
    refuse_acks(worker)
    deadline: list[asyncio.Timeout] = []

    async def bounded() -> None:
        async with asyncio.timeout(None) as timeout:
            deadline.append(timeout)
            await worker.run()

    runner = asyncio.ensure_future(bounded())
    await asyncio.wait_for(until(lambda: worker.stats.succeeded == 1), GUARD)
    deadline[0].reschedule(asyncio.get_running_loop().time())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runner, GUARD)
    stopped = [r for r in caplog.records if getattr(r, "action", None) == "outcome_unwritten"]
    assert [r.levelno for r in stopped] == [logging.WARNING, logging.ERROR]


@pytest.mark.parametrize("stopped", [False, True], ids=["claiming", "after_stop"])
async def test_a_cancelled_stop_that_fails_to_put_jobs_back_says_so(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture, stopped: bool
) -> None:
    """run() cancelled, and its stop's write putting back the running job fails (the outcomes
    were written, so no outcome_unwritten): the CancelledError goes on, and the error went
    nowhere, no record saying that the job stays running until its lease expires. It is
    logged now (worker_stop_failed), at any stop."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    stuck = t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, shutdown_timeout=0.1)
    real = worker._ack_db.run

    async def broken(query_: Any) -> Any:
        if getattr(query_, "sql", None) is _queries.LEASES_RELEASE:
            raise psycopg.OperationalError("injected: the release is not written")
        return await real(query_)

    worker._ack_db.run = broken  # type: ignore[method-assign]
    running = await cancel_running(worker, stopped)
    assert running.cancelled()
    [failed] = [r for r in caplog.records if getattr(r, "action", None) == "worker_stop_failed"]
    assert failed.levelno == logging.ERROR and "the release is not written" in failed.getMessage()
    assert query(dsn, "SELECT state FROM pgqueue.jobs WHERE id = %s", [stuck]) == [("running",)]


@pytest.mark.parametrize("cut", ["unwinding", "writing"])
async def test_a_stop_cut_short_still_closes_connections_and_port(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cut: str
) -> None:
    """The stop of a cancelled run() cut short (a second cancellation here) while it waited for
    its loops to unwind (a service whose own cleanup takes a while) ended there: the worker's
    connections stayed open and its metrics port bound, for the process's life. They are
    closed all the same. So they are when the cut (CANCELLED_STOP, shortened here) lands in
    the last writes (held here until it does): the stop then waited for that cleanup, for
    as long as it took, before it closed them."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    monkeypatch.setattr(_worker_module, "CANCELLED_STOP", GUARD if cut == "unwinding" else 0.2)
    cleaning = asyncio.Event()
    release = asyncio.Event()

    async def slow_cleanup(worker: pgqueue.Worker) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await release.wait()  # its cleanup outlasts the stop's limit

    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, metrics_port=0,
                          services=[slow_cleanup])  # fmt: skip
    if cut == "writing":
        hold_until_cut(worker, _queries.WORKERS_DELETE)
    running = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(until(lambda: actions(caplog).count("worker_started") == 1), GUARD)
    port = worker.events.metrics_port
    assert port is not None
    worker.stop()
    running.cancel()
    if cut == "unwinding":
        await asyncio.wait_for(cleaning.wait(), GUARD)  # the last writes are done
        running.cancel()
    await asyncio.wait([running], timeout=GUARD)
    assert running.cancelled() and cleaning.is_set()
    assert [r.levelname for r in caplog.records if getattr(r, "action", None) == "worker_stop_cut"
            ] == ["ERROR"]  # fmt: skip
    await asyncio.wait_for(until(lambda: query(dsn, SESSIONS) == [(0,)]), GUARD)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=GUARD).close()
    release.set()


@pytest.mark.parametrize("cancelled", ["connecting", "registering"])
async def test_a_start_cancelled_once_registered_leaves_no_worker_row(
    dsn: str, cancelled: str
) -> None:
    """run() cancelled as it starts, after registering while its claimer still connects (a
    slow network, asyncio.timeout): it closed its connections and left its row in
    pgqueue.worker_processes, a live-looking worker that runs nothing, which kept another
    process on this host from taking its name until pruned (ten heartbeats). The row goes.
    Cancelled as the register's reply came in (committed), the start went on waiting for
    the claimer's connect, whatever the cancellation, for as long as it took (here, for
    ever): it no longer waits."""
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    original = worker._claim_db.connection

    async def slow() -> Any:
        await asyncio.Event().wait()  # the claimer's connect never ends
        return await original()

    worker._claim_db.connection = slow  # type: ignore[method-assign]
    registered = asyncio.Event()
    real = worker._maint_db.run

    async def register(query_: Any) -> Any:
        result = await real(query_)
        if getattr(query_, "sql", None) is _queries.WORKERS_REGISTER:
            if cancelled == "registering":
                running.cancel()  # lands as the reply comes in: the row has committed
                await asyncio.sleep(0)
            registered.set()  # run() now waits for the claimer's connect
        return result

    worker._maint_db.run = register  # type: ignore[method-assign]
    running = asyncio.ensure_future(worker.run())
    if cancelled == "connecting":
        await asyncio.wait_for(registered.wait(), GUARD)
        running.cancel()
    await asyncio.wait([running], timeout=GUARD)
    assert running.cancelled()
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []
    await asyncio.wait_for(until(lambda: query(dsn, SESSIONS) == [(0,)]), GUARD)


async def test_a_bug_in_the_stop_of_a_cancelled_run_is_logged(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug raised by the stop of a run() cancelled once it shut down went nowhere: run()
    raises the CancelledError, and the stop's error was retrieved and dropped. It is logged
    with its traceback (worker_stop_failed); the connections are closed all the same."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    raise_at(monkeypatch, JobExecutor, "shutdown")
    t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, shutdown_timeout=GUARD)
    running = await cancel_running(worker, stopped=True)
    assert running.cancelled()
    [failed] = [r for r in caplog.records if getattr(r, "action", None) == "worker_stop_failed"]
    assert "injected bug in shutdown" in failed.getMessage() and failed.exc_info is not None
    await asyncio.wait_for(until(lambda: query(dsn, SESSIONS) == [(0,)]), GUARD)
