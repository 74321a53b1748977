"""Outcomes other than retries are reported when the attempt ends, before they are written: a
report the database then contradicts is corrected, and an outcome never to be written is not
reported as the job's end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from pgqueue._worker import _worker
from tests.helpers import query, refuse_acks, run_worker_until

# Refuses to move a job to history as succeeded; a failure passes.
REFUSE_SUCCESS = """
CREATE FUNCTION refuse_success() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF NEW.state = 'succeeded' THEN
        RAISE EXCEPTION 'injected: no success here' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_success BEFORE INSERT ON pgqueue.finished_jobs
    FOR EACH ROW EXECUTE FUNCTION refuse_success();
"""


def refusing_worker(dsn: str, conn: Any, trigger: str) -> tuple[pgqueue.Worker, int]:
    """A worker of queue "q" and the id of its one job, of a task that returns at once, with
    ``trigger`` installed."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="fine", queue="q")
    async def fine() -> None:
        pass

    job_id = app.using("fine").enqueue(conn)
    conn.commit()
    query(dsn, trigger)
    return app.worker(queues=["q"], poll_interval=0.05), job_id


def _actions(caplog: Any, action: str) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


async def test_a_success_the_database_records_as_failed_is_reported_failed(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The database refuses a success, and the acker records the job as failed. The worker
    reported it succeeded when it ended: its stats must say failed, as the database does, and
    a job_failed record must name the job."""
    caplog.set_level(logging.DEBUG, logger="pgqueue.worker")
    w, job_id = refusing_worker(dsn, conn, REFUSE_SUCCESS)
    ended = "SELECT state FROM pgqueue.jobs"
    await run_worker_until(w, lambda: query(dsn, ended) == [("failed",)], timeout=10)
    assert (w.stats.succeeded, w.stats.failed) == (0, 1)
    [failed] = _actions(caplog, "job_failed")
    assert (failed.levelno, failed.job_id, failed.attempt) == (logging.ERROR, job_id, 1)
    assert "not succeeded as reported" in failed.getMessage()


def stubborn_app(
    dsn: str, release: asyncio.Event, end: Callable[[], None] = lambda: None
) -> pgqueue.PgQueue:
    """An app whose task "stubborn" ignores its cancellation until ``release`` is set, and then
    ends by calling ``end``."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="stubborn", queue="q")
    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        end()

    return app


def _snooze() -> None:
    raise pgqueue.Retry()


async def test_an_abandoned_coroutine_ending_after_the_last_writes_is_not_reported_succeeded(
    dsn: str, conn: Any, caplog: Any, monkeypatch: Any
) -> None:
    """A coroutine ignores its cancellation at shutdown, is abandoned, and returns after the
    worker's last writes: its success is never written, and its job is back in the queue to
    run again. The worker must not log or count it as succeeded, and logs outcome_unwritten
    naming the job instead."""
    monkeypatch.setattr(_worker, "CANCEL_GRACE", 0.2)
    caplog.set_level(logging.DEBUG, logger="pgqueue.worker")
    release = asyncio.Event()
    app = stubborn_app(dsn, release)
    job_id = app.using("stubborn").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, shutdown_timeout=0.1)
    await run_worker_until(w, lambda: w.running == 1, timeout=10)
    assert w.abandoned_coroutines() == 1
    release.set()
    await asyncio.wait(w._abandoned)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]
    assert w.stats.succeeded == 0
    assert _actions(caplog, "job_succeeded") == []
    [unwritten] = _actions(caplog, "outcome_unwritten")
    assert (unwritten.levelno, unwritten.job_id) == (logging.WARNING, job_id)


async def test_an_abandoned_coroutines_job_the_release_ends_cancelled_is_reported_cancelled(
    dsn: str, conn: Any, caplog: Any, monkeypatch: Any
) -> None:
    """A job is asked to cancel while its coroutine runs, before the worker learns of it (no
    hint: a heartbeat's news); at shutdown the coroutine ignores its cancellation and is
    abandoned. The release ends the job cancelled, as asked, and the worker reported nothing
    (no count, no job_cancelled record, no job_ended hook: no Django task_finished), as it
    reports a stopped coroutine that did end."""
    monkeypatch.setattr(_worker, "CANCEL_GRACE", 0.2)
    caplog.set_level(logging.DEBUG, logger="pgqueue.worker")
    release = asyncio.Event()
    app = stubborn_app(dsn, release)
    ended: list[pgqueue.JobEvent] = []
    app.hooks.job_ended["stubborn"] = ended.append
    job_id = app.using("stubborn").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, shutdown_timeout=0.1, lease=600,
                   heartbeat=300)  # fmt: skip
    ask = "UPDATE pgqueue.active_jobs SET cancel_requested = true"
    try:
        await run_worker_until(w, lambda: w.running == 1 and query(dsn, ask) == [], timeout=10)
        assert w.abandoned_coroutines() == 1
        assert query(dsn, "SELECT state FROM pgqueue.jobs") == [("cancelled",)]
        assert (w.stats.cancelled, [e.state for e in ended]) == (1, ["cancelled"])
        assert [r.job_id for r in _actions(caplog, "job_cancelled")] == [job_id]
    finally:
        release.set()
        await asyncio.wait(w._abandoned)


async def test_an_abandoned_coroutines_snooze_after_the_stop_is_not_written(
    dsn: str, conn: Any, monkeypatch: Any
) -> None:
    """A coroutine ignores its cancellation at shutdown, is abandoned, and raises Retry() (its
    attempt given back) before the worker's last writes. The worker had stopped that attempt,
    so it ends as the stop says: its job put back once, the attempt not counted, and the Retry
    is not written. Written, as it was, another worker could claim the job as attempt 1 again
    before the put-back, which then had to leave that claim (it once put it back, and the job
    ran twice at once): the hook below claims it so whenever an outcome is written."""
    monkeypatch.setattr(_worker, "CANCEL_GRACE", 0.2)
    release = asyncio.Event()
    app = stubborn_app(dsn, release, _snooze)
    job_id = app.using("stubborn").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, shutdown_timeout=0.1)
    real = w._ack_db.run

    async def run(q: Any) -> Any:
        if w.abandoned_coroutines() and not release.is_set():  # before the last writes
            release.set()
            while w.abandoned_coroutines():  # it ends, its outcome kept
                await asyncio.sleep(0.01)
        done = await real(q)
        if "outcomes" in (getattr(q, "params", None) or {}) and release.is_set():
            claim = _store.jobs_claim("w2", {"q": 1}, 30)
            with psycopg.connect(dsn, autocommit=True) as other:
                assert [r[0] for r in _store.run(other.cursor(), claim).rows] == [job_id]
        return done

    w._ack_db.run = run  # type: ignore[method-assign]
    await run_worker_until(w, lambda: w.running == 1, timeout=10)
    row = "SELECT state, attempts, worker_id FROM pgqueue.jobs"
    assert query(dsn, row) == [("queued", 0, None)]


# What the rescue of an expired lease does to a running job: another worker may claim it now.
PUT_BACK = """
UPDATE pgqueue.active_jobs SET state = 'queued', worker_id = NULL, lease_expires_at = NULL
 WHERE state = 'running'
"""


def lease_passing_app(dsn: str, first: Callable[[], None]) -> pgqueue.PgQueue:
    """An app whose task "once" (one attempt allowed) puts its own job back in the queue, as a
    rescue would, and then ends by calling ``first`` on its first run, and returns on the runs
    after it."""
    app = pgqueue.PgQueue(dsn)
    ran: list[int] = []

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        ran.append(1)
        if len(ran) == 1:
            await asyncio.to_thread(query, dsn, PUT_BACK)
            first()

    return app


def _fail() -> None:
    raise ValueError("attempt 1 fails")


def _cancel() -> None:
    raise pgqueue.Cancel("attempt 1 cancels")


@pytest.mark.parametrize(
    "first", [lambda: None, _fail, _cancel], ids=["success", "failure", "cancel"]
)
async def test_an_outcome_whose_ack_met_a_lost_lease_leaves_the_stats(
    dsn: str, conn: Any, caplog: Any, first: Callable[[], None]
) -> None:
    """Attempt 1's lease passes on before its outcome is written: the ack's fence refuses it
    (ack_lease_lost) and the job's attempt 2 succeeds. worker.stats must count what the
    database holds, one success, as it does when an outcome is refused and not written
    (outcome_unwritten), not attempt 1's outcome too."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = lease_passing_app(dsn, first)
    job_id = app.using("once").enqueue(conn)
    conn.commit()
    # No listener: its start asks for a heartbeat, which would stop attempt 1 (lease lost).
    w = app.worker(queues=["q"], poll_interval=0.05, listen=False)
    done = "SELECT state, attempts FROM pgqueue.jobs"
    await run_worker_until(w, lambda: query(dsn, done) == [("succeeded", 2)], timeout=10)
    [lost] = _actions(caplog, "ack_lease_lost")
    assert (lost.job_id, lost.attempt) == (job_id, 1)
    stats = w.stats
    assert (stats.succeeded, stats.failed, stats.cancelled, stats.retried) == (1, 0, 0, 0)


# Refuses to move a job's first attempt to history as succeeded; a failure passes.
REFUSE_FIRST_SUCCESS = REFUSE_SUCCESS.replace(
    "NEW.state = 'succeeded'", "NEW.state = 'succeeded' AND NEW.attempts = 1"
)


async def test_a_refused_success_whose_failure_met_a_lost_lease_is_counted_once(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The database refuses attempt 1's success, and the lease passes on before the failure
    recording that is written: the database holds neither, and attempt 2 succeeds. The success
    leaves worker.stats once, the failure never entered them, and ack_lease_lost names the
    attempt (not outcome_unwritten, nor job_failed: nothing failed)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    w, job_id = refusing_worker(dsn, conn, REFUSE_FIRST_SUCCESS)
    real = w._ack_db.run

    async def run(q: Any) -> Any:  # the lease passes on just before the failure is written
        if "could not store" in str(getattr(q, "params", None)):
            await asyncio.to_thread(query, dsn, PUT_BACK)
        return await real(q)

    w._ack_db.run = run  # type: ignore[method-assign]
    done = "SELECT state, attempts FROM pgqueue.jobs"
    await run_worker_until(w, lambda: query(dsn, done) == [("succeeded", 2)], timeout=10)
    assert (w.stats.succeeded, w.stats.failed) == (1, 0)
    [lost] = _actions(caplog, "ack_lease_lost")
    assert (lost.job_id, lost.attempt) == (job_id, 1)
    assert _actions(caplog, "outcome_unwritten") == _actions(caplog, "job_failed") == []


async def test_after_a_failed_last_flush_an_abandoned_coroutine_ending_in_the_drain_is_written(
    dsn: str, conn: Any, caplog: Any, monkeypatch: Any
) -> None:
    """The last flush at shutdown fails, so the jobs stopped then are not put back, and the
    acker goes on writing while callbacks drain. A coroutine abandoned at shutdown that ends
    then is not past the worker's last writes: its outcome must be written with the one the
    flush failed to write, not dropped as outcome_unwritten (whose job, still running, would
    wait for its lease to expire to run again)."""
    monkeypatch.setattr(_worker, "CANCEL_GRACE", 0.2)
    caplog.set_level(logging.DEBUG, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)
    release, callback_started, callback_release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def on_success(event: Any) -> None:
        callback_started.set()
        await callback_release.wait()

    @app.task(name="fine", queue="q", on_success=on_success)
    async def fine() -> None:
        pass

    @app.task(name="stubborn", queue="q")
    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    app.using("fine").enqueue(conn)
    app.using("stubborn").enqueue(conn)
    conn.commit()
    # Outcomes wait for a second one (or 20 s): the last flush is the first ack statement.
    w = app.worker(queues=["q"], poll_interval=0.05, shutdown_timeout=1, ack_batch=2,
                   ack_interval=20)  # fmt: skip
    real, failed, tries = w._ack_db.run, asyncio.Event(), [0]

    async def run(q: Any) -> Any:
        acks = isinstance(q, _store.Together) or "outcomes" in (getattr(q, "params", None) or {})
        if acks and not failed.is_set():  # the last flush, and the stop's second try
            tries[0] += 1
            if tries[0] == 2:
                failed.set()
            raise psycopg.OperationalError("injected: the last flush fails")
        return await real(q)

    w._ack_db.run = run  # type: ignore[method-assign]
    runner = asyncio.create_task(w.run())
    await asyncio.wait_for(callback_started.wait(), 10)
    while w.running != 1:
        await asyncio.sleep(0.02)
    w.stop()
    await asyncio.wait_for(failed.wait(), 10)
    release.set()  # the abandoned coroutine ends while the callback holds the drain
    ended, written = "SELECT task, state FROM pgqueue.jobs ORDER BY id", False
    for _ in range(40):  # the drain waits up to shutdown_timeout for the callback
        written = await asyncio.to_thread(query, dsn, ended) == [
            ("fine", "succeeded"), ("stubborn", "succeeded"),
        ]  # fmt: skip
        if written:
            break
        await asyncio.sleep(0.02)
    callback_release.set()
    with pytest.raises(psycopg.OperationalError, match="the last flush fails"):
        await asyncio.wait_for(runner, 30)
    assert written, query(dsn, ended)
    assert _actions(caplog, "outcome_unwritten") == []


async def test_outcomes_the_acker_never_wrote_by_the_stop_leave_the_stats(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The database refuses every ack until the worker has stopped: the last flush fails and
    so does the acker until it is stopped. The job's success was counted when it ended; the
    database holds nothing of it (the job stays running until its lease expires, and runs
    again), so it must leave worker.stats, and an outcome_unwritten record must name it."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)
    ran = asyncio.Event()

    @app.task(name="fine", queue="q")
    async def fine() -> None:
        ran.set()

    job_id = app.using("fine").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, shutdown_timeout=0.5, ack_interval=20)
    refuse_acks(w)
    runner = asyncio.create_task(w.run())
    await asyncio.wait_for(ran.wait(), 10)
    while w.stats.succeeded != 1:
        await asyncio.sleep(0.02)
    w.stop()
    with pytest.raises(pgqueue.PgQueueError, match="stopped with 1 outcome unwritten") as stop:
        await asyncio.wait_for(runner, 30)
    assert isinstance(stop.value.__cause__, psycopg.OperationalError)
    assert "no ack is written" in str(stop.value)
    assert query(dsn, "SELECT state FROM pgqueue.jobs") == [("running",)]
    assert (w.stats.succeeded, w.stats.failed) == (0, 0)
    unwritten, stopped = _actions(caplog, "outcome_unwritten")  # the job, then the stop's count
    assert (unwritten.levelno, unwritten.job_id, unwritten.attempt) == (logging.WARNING, job_id, 1)
    assert stopped.levelno == logging.ERROR and stopped.getMessage() == str(stop.value)
