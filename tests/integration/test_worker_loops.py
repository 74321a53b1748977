"""A bug in one of the worker's own loops: the loops it cannot be correct without (claims,
heartbeats, outcome writes) fail it, loudly, after a shutdown that leaves no job to run twice
unseen; the others (maintenance, the listener) are tried again. And the records of the
worker's life carry what their messages say."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue import _events, _store
from pgqueue._worker import _worker as _worker_module
from pgqueue._worker._db import Db
from pgqueue._worker._executor import ClaimedJob
from pgqueue._worker._scheduler import Scheduler
from tests.helpers import cancel_running, query, raise_at, run_worker_until, states
from tests.integration import tasks_app as t

GUARD = 60  # seconds a worker that should stop by itself gets: only a failing test waits it


def records(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    """The captured records of ``action``."""
    return [r for r in caplog.records if getattr(r, "action", None) == action]


def broken_when(monkeypatch: pytest.MonkeyPatch, name: str, when: Callable[..., bool]) -> list[int]:
    """Make ``_store.<name>`` raise RuntimeError (a bug, not a database error) whenever
    ``when(*args)`` holds; returns a list that grows by one at each call."""
    original = getattr(_store, name)
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if when(*args, **kwargs):
            raise RuntimeError(f"injected bug in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(_store, name, broken)
    return calls


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (the test's own guard ends a failing wait)."""
    while not condition():
        await asyncio.sleep(0.01)


async def leases_outlived(dsn: str, ids: list[int]) -> None:
    """Wait until the leases (of a second) of the jobs ``ids`` would have expired and been
    rescued, or were extended past that."""
    [(expiry,)] = query(dsn, "SELECT max(lease_expires_at) FROM pgqueue.active_jobs"
                             " WHERE id = ANY(%s)", [ids])  # fmt: skip
    settled = ("SELECT bool_and(state = 'queued' OR lease_expires_at > %s + interval '1 s')"
               " FROM pgqueue.active_jobs WHERE id = ANY(%s)")  # fmt: skip
    await asyncio.wait_for(until(lambda: query(dsn, settled, [expiry, ids]) == [(True,)]), GUARD)


async def test_a_heartbeat_loop_bug_fails_the_worker_and_puts_its_running_job_back(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat loop that raises something other than a database error used to end with
    one service_error while the worker ran on: its jobs' leases then expired and other
    workers ran them again while they still ran here. Now the worker fails: it stops the
    running job at once and puts it back (attempt not counted), and run() raises
    WorkerFailed, logged as worker_failed with the traceback."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    broken_when(monkeypatch, "leases_extend", lambda worker, lease, held: bool(held))
    job_id = t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, heartbeat=0.05)
    with pytest.raises(pgqueue.WorkerFailed, match="heartbeat loop raised RuntimeError") as err:
        await asyncio.wait_for(worker.run(), GUARD)
    assert isinstance(err.value.__cause__, RuntimeError)
    assert query(dsn, "SELECT state, attempts, worker_id FROM pgqueue.jobs WHERE id = %s",
                 [job_id]) == [("queued", 0, None)]  # fmt: skip
    [failed] = records(caplog, "worker_failed")
    assert (failed.levelname, failed.loop, failed.worker) == ("CRITICAL", "heartbeat", worker.name)  # type: ignore[attr-defined]
    assert failed.exc_info is not None and "injected bug" in str(failed.exc_info[1])
    assert records(caplog, "worker_draining") == []  # it did not wait on expiring leases
    [released] = records(caplog, "jobs_released")
    assert released.count == 1  # type: ignore[attr-defined]
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []


async def test_a_claim_loop_bug_fails_the_worker_after_its_running_job_finished(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim loop raising (here at its second claim) stops the worker as SIGTERM would,
    heartbeats going on: the running job finishes and its outcome is written; then run()
    raises WorkerFailed (it used to raise the bare error, with no record of it)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    claims = broken_when(monkeypatch, "jobs_claim", lambda *args: len(claims) > 1)
    job_id = t.sleepy.enqueue(conn, 0.3)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], concurrency=2, poll_interval=0.05)
    with pytest.raises(pgqueue.WorkerFailed, match="claim loop raised RuntimeError"):
        await asyncio.wait_for(worker.run(), GUARD)
    assert query(dsn, "SELECT state FROM pgqueue.jobs WHERE id = %s", [job_id]) == [("succeeded",)]
    [failed] = records(caplog, "worker_failed")
    assert failed.loop == "claim"  # type: ignore[attr-defined]


async def test_an_acker_bug_fails_the_worker_and_names_the_outcome_it_could_not_write(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An acker whose writes raise something other than a database error used to try again
    for ever, every outcome held behind the one it could not write while their leases
    expired. Now the worker fails, and names the outcome it could not write."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    broken_when(monkeypatch, "jobs_ack", lambda outcomes: True)
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    with pytest.raises(pgqueue.WorkerFailed, match="acker loop raised RuntimeError"):
        await asyncio.wait_for(worker.run(), GUARD)
    [failed] = records(caplog, "worker_failed")
    assert failed.loop == "acker"  # type: ignore[attr-defined]
    [unwritten] = records(caplog, "outcome_unwritten")
    assert unwritten.job_id == job_id  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("loop", "owner", "name", "option", "action"),
    [("maintenance", _store, "workers_prune", "rescue_interval", "maintenance_error"),
     ("summary", _events, "_log_summary", "summary_interval", "loop_error")],
)  # fmt: skip
async def test_a_bug_in_one_of_the_optional_loops_is_logged_and_the_loop_goes_on(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    loop: str, owner: Any, name: str, option: str, action: str,
) -> None:  # fmt: skip
    """A pass of maintenance, or of the summary, that raises (a bug) used to end the loop for
    good (one service_error): this worker then never rescued nor pruned again, or logged no
    summary. Now the bug is an ERROR with its traceback, and the next passes still come."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    calls = raise_at(monkeypatch, owner, name)
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, **{option: 0.05})
    await run_worker_until(worker, lambda: len(calls) >= 2, timeout=GUARD)
    [crashed] = [r for r in records(caplog, action) if r.levelname == "ERROR"]
    assert crashed.loop == loop and crashed.exc_info is not None  # type: ignore[attr-defined]
    assert f"RuntimeError: injected bug in {name}" in crashed.getMessage()
    assert records(caplog, "service_error") == []


async def test_a_metrics_refresh_bug_is_logged_and_the_reads_go_on(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The gauges' reads raising (a bug) used to end them for good: the gauges kept their
    last values for the rest of the process's life. Now the bug is a loop_error with its
    traceback, and the reads go on."""
    pytest.importorskip("prometheus_client")
    from pgqueue._metrics import WorkerMetrics

    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    worker = t.app.worker(dsn=dsn, queues=["io"])
    metrics = WorkerMetrics(worker)
    reads = raise_at(monkeypatch, metrics, "refresh")
    refreshing = asyncio.ensure_future(metrics.refresh_depth(0.01))
    try:
        await asyncio.wait_for(until(lambda: len(reads) >= 3 or refreshing.done()), GUARD)
    finally:
        refreshing.cancel()
        await worker._close_connections()
    assert len(reads) >= 3
    assert metrics.depth.labels("io")._value.get() == 0  # read after the bug
    [crashed] = records(caplog, "loop_error")
    assert crashed.loop == "metrics" and crashed.exc_info is not None  # type: ignore[attr-defined]


async def test_a_stray_cancellederror_in_an_optional_loop_is_a_bug_and_the_loop_goes_on(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass raising CancelledError of its own (awaiting a future something else cancelled:
    a bug), not because its loop was cancelled, ended the loop for good, and without a word:
    its task ended as cancelled, which no record reports. It is a bug like any other now,
    logged with its traceback, and the passes go on; a cancellation of the loop still ends it
    (the worker's stop)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    original = _store.workers_prune
    calls: list[int] = []

    def stray(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise asyncio.CancelledError  # not the loop's cancellation
        return original(*args)

    monkeypatch.setattr(_store, "workers_prune", stray)
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, rescue_interval=0.05)
    await run_worker_until(worker, lambda: len(calls) >= 2, timeout=GUARD)
    [crashed] = [r for r in records(caplog, "maintenance_error") if r.levelname == "ERROR"]
    assert crashed.loop == "maintenance" and crashed.exc_info is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize("bug", [asyncio.CancelledError, RuntimeError])
async def test_a_bug_in_a_scheduler_pass_is_logged_and_the_scheduler_goes_on(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, bug: type
) -> None:
    """A scheduler pass raising CancelledError of its own (a bug, as in the other optional
    loops) ended the scheduler for the process's life, without a word: its task ended as
    cancelled, which no record reports, and this worker fired no tick again. The scheduler
    runs through repeat() now, as pgqueue's other optional loops do: such a pass, and one
    raising any other bug, is a scheduler_error with its traceback, and the passes go on."""
    caplog.set_level(logging.INFO)
    app = pgqueue.PgQueue(dsn)

    @app.periodic("0 0 1 1 *", name="yearly")
    async def yearly() -> None:
        return None

    original = Scheduler.step
    calls: list[int] = []

    async def step(self: Scheduler) -> float:
        calls.append(1)
        if len(calls) == 1:
            raise bug("injected bug in a scheduler pass")
        return min(await original(self), 0.05)

    monkeypatch.setattr(Scheduler, "step", step)
    worker = app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: len(calls) >= 2, timeout=GUARD)
    [crashed] = [r for r in records(caplog, "scheduler_error") if r.levelname == "ERROR"]
    assert crashed.loop == "scheduler" and crashed.exc_info is not None  # type: ignore[attr-defined]
    assert records(caplog, "service_error") == []


async def test_a_listener_bug_is_logged_and_listening_starts_again(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The listener raising something other than a database error used to end it for good:
    the worker polled from then on. Now it is an ERROR, and the listener starts again."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    listens = broken_when(monkeypatch, "listen_jobs", lambda: len(listens) == 1)
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: bool(records(caplog, "listen_restored")), GUARD)
    [lost] = records(caplog, "listen_lost")
    assert lost.levelname == "ERROR" and lost.exc_info is not None
    assert "RuntimeError: injected bug in listen_jobs" in lost.getMessage()


async def test_listen_lost_says_why_with_one_traceback_per_outage(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """listen_lost gave no reason: each now names the error, and the first of an outage
    carries the traceback, not the reconnects after it."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    original = _store.listen_jobs
    tries: list[int] = []

    def refused() -> Any:
        tries.append(1)
        if len(tries) <= 3:
            raise psycopg.OperationalError("too many clients already")
        return original()

    monkeypatch.setattr(_store, "listen_jobs", refused)
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: bool(records(caplog, "listen_restored")), GUARD)
    lost = records(caplog, "listen_lost")
    assert [r.levelname for r in lost] == ["WARNING"] * 3
    assert all("OperationalError: too many clients already" in r.getMessage() for r in lost)
    assert [bool(r.exc_info) for r in lost] == [True, False, False]


async def test_the_records_of_a_shutdown_carry_the_worker_and_their_counts(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """worker_stopping, worker_draining and worker_stopped carry the worker, as
    worker_started does; worker_draining the jobs still running and jobs_released how many
    went back (both were only in the message)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    for _ in range(2):
        t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, shutdown_timeout=0.1)
    await run_worker_until(worker, lambda: worker.running == 2, timeout=GUARD)
    assert states(dsn) == {"queued": 2}
    for action in ("worker_stopping", "worker_draining", "worker_stopped"):
        [record] = records(caplog, action)
        assert record.worker == worker.name  # type: ignore[attr-defined]
    [draining] = records(caplog, "worker_draining")
    assert draining.running == 2  # type: ignore[attr-defined]
    [released] = records(caplog, "jobs_released")
    assert released.count == 2  # type: ignore[attr-defined]


async def test_the_records_of_a_shutdown_count_one_job_as_one(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A shutdown with one job running said "for 1 running jobs" and "put 1 unfinished jobs
    back in their queues"."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, shutdown_timeout=0.1)
    await run_worker_until(worker, lambda: worker.running == 1, timeout=GUARD)
    [draining] = records(caplog, "worker_draining")
    assert draining.getMessage() == "waiting up to 0.1 s for 1 running job"
    [released] = records(caplog, "jobs_released")
    assert released.getMessage() == "put 1 unfinished job back in its queue"


async def test_jobs_rescued_counts_a_cancelled_job_apart_from_failed_ones(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A rescued job asked to cancel ends cancelled, and is counted in `cancelled`, not in
    `failed` (which counted it: the message called it failed, out of attempts)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    t.add.enqueue(conn, 1, 2)
    conn.commit()
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'running', attempts = 1, worker_id ="
               " 'gone', started_at = now(), lease_expires_at = now() - interval '1 s',"
               " cancel_requested = true")  # fmt: skip
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"cancelled": 1}, timeout=GUARD)
    [rescued] = records(caplog, "jobs_rescued")
    assert (rescued.failed, rescued.cancelled) == (0, 1)  # type: ignore[attr-defined]
    assert "0 failed, out of attempts; 1 cancelled, as asked" in rescued.getMessage()


async def test_metrics_error_says_why_with_one_traceback_per_outage(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """metrics_error gave no reason: each now names the error, and the first of an outage
    carries the traceback, not the reads after it that fail the same way."""
    pytest.importorskip("prometheus_client")
    from pgqueue._metrics import WorkerMetrics

    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    worker = t.app.worker(dsn=dsn, queues=["io"])
    reads: list[int] = []

    async def refused(query: Any) -> Any:
        reads.append(1)
        raise psycopg.OperationalError("the database system is starting up")

    monkeypatch.setattr(worker, "run_sql", refused)
    refreshing = asyncio.ensure_future(WorkerMetrics(worker).refresh_depth(0.01))
    try:
        await asyncio.wait_for(until(lambda: len(reads) >= 3), GUARD)
    finally:
        refreshing.cancel()
    errors = records(caplog, "metrics_error")[:3]
    assert all("OperationalError: the database system" in r.getMessage() for r in errors)
    assert [bool(r.exc_info) for r in errors] == [True, False, False]


async def test_the_depth_says_when_it_was_last_read_and_a_failed_read_does_not_move_it(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the database could not be read, the depth (and the estimate, the oldest holder)
    went on serving its last reading as if it were current: a dashboard showed a steady
    backlog, and no alert on the depth could fire. pgqueue_queue_depth_read_timestamp_seconds
    says when they were last read; a failed read leaves it where it was."""
    pytest.importorskip("prometheus_client")
    from pgqueue._metrics import WorkerMetrics

    worker = t.app.worker(dsn=dsn, queues=["io"])
    metrics = WorkerMetrics(worker)
    name = "pgqueue_queue_depth_read_timestamp_seconds"
    try:
        assert metrics.registry.get_sample_value(name) == 0.0
        before = time.time()
        await metrics.refresh()
        read = metrics.registry.get_sample_value(name)
        assert read is not None and read >= before
    finally:
        await worker._close_connections()

    async def refused(query: Any) -> Any:
        raise psycopg.OperationalError("the database system is starting up")

    monkeypatch.setattr(worker, "run_sql", refused)
    with pytest.raises(psycopg.OperationalError):
        await metrics.refresh()
    assert metrics.registry.get_sample_value(name) == read


async def test_an_acker_bug_met_again_by_the_last_flush_still_puts_jobs_back_and_deregisters(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The shutdown's last flush runs the acker's code, and meets its bug again: it used to
    end the shutdown there, the job stopped at the shutdown timeout left running until its
    lease expired and the worker's row left registered. Now the rest of the stop goes on:
    the job goes back, the row goes, and the outcome never written leaves worker.stats."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    broken_when(monkeypatch, "jobs_ack", lambda outcomes: True)
    stuck = t.sleepy.enqueue(conn, 3600)
    done = t.add.enqueue(conn, 1, 2)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, shutdown_timeout=0.1)
    with pytest.raises(pgqueue.WorkerFailed, match="acker loop raised RuntimeError"):
        await asyncio.wait_for(worker.run(), GUARD)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE id = %s",
                 [stuck]) == [("queued", 0)]  # fmt: skip
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []
    assert [r.job_id for r in records(caplog, "outcome_unwritten")] == [done]  # type: ignore[attr-defined]
    assert worker.stats.succeeded == 0
    assert len(records(caplog, "worker_failed")) == 1  # the same bug again is not logged twice


async def test_a_failed_worker_cancelled_while_it_shuts_down_raises_the_cancellation(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """run() cancelled from outside (asyncio.timeout, a TaskGroup) while a failed worker
    waited for its running jobs raised WorkerFailed in the CancelledError's place, which
    asyncio.timeout and TaskGroup then do not see as their cancellation. It goes through, after
    the last writes (its running job put back, its row deleted)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    claims = broken_when(monkeypatch, "jobs_claim", lambda *args: len(claims) > 1)
    stuck = t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(
        dsn=dsn, queues=["io"], concurrency=2, poll_interval=0.05, shutdown_timeout=GUARD
    )
    running = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(until(lambda: bool(records(caplog, "worker_draining"))), GUARD)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE id = %s",
                 [stuck]) == [("queued", 0)]  # fmt: skip
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []


async def test_outcomes_a_failed_acker_holds_keep_their_leases_while_the_worker_drains(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After the acker fails, the outcomes it holds wait for the shutdown's last flush, while
    the worker lets its other jobs finish: heartbeats extended only the running jobs' leases,
    so a finished job's lease expired meanwhile and it was rescued (to run again), its outcome
    then refused by the fence. Heartbeats now extend the leases of outcomes not yet written
    too, and the last flush writes it (the bug here raised once)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    acks = broken_when(monkeypatch, "jobs_ack", lambda outcomes: len(acks) == 1)
    stuck = t.sleepy.enqueue(conn, 3600)
    done = t.add.enqueue(conn, 1, 2)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, lease=1.0, heartbeat=0.1,
                          rescue_interval=0.1, shutdown_timeout=GUARD)  # fmt: skip
    running = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(until(lambda: bool(records(caplog, "worker_draining"))), GUARD)
    await leases_outlived(dsn, [done])
    worker.cancel_local(stuck, "shutdown")
    with pytest.raises(pgqueue.WorkerFailed, match="acker loop raised RuntimeError"):
        await asyncio.wait_for(running, GUARD)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE id = %s",
                 [done]) == [("succeeded", 1)]  # fmt: skip


async def test_a_start_that_raises_midway_through_a_claim_puts_back_the_jobs_not_started(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A start raising (a bug) at the third job of a claim of five fails the worker, and used
    to leave that job and the two after it running under the worker until their leases
    expired, to be rescued with their attempt counted. Now they go back at the stop with the
    jobs stopped there, at once and attempt given back; the two started before it end."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    raise_at(monkeypatch, ClaimedJob, "context", 3)  # at the context each start builds first
    for n in range(5):
        t.add.enqueue(conn, n, n)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    with pytest.raises(pgqueue.WorkerFailed, match="claim loop raised RuntimeError"):
        await asyncio.wait_for(worker.run(), GUARD)
    assert states(dsn) == {"succeeded": 2, "queued": 3}
    assert query(dsn, "SELECT attempts, worker_id FROM pgqueue.jobs WHERE state = 'queued'"
                      " GROUP BY 1, 2") == [(0, None)]  # fmt: skip
    [released] = records(caplog, "jobs_released")
    assert released.count == 3  # type: ignore[attr-defined]
    assert (worker.stats.claimed, worker.stats.succeeded) == (2, 2)


async def test_a_job_whose_task_cannot_be_created_leaves_no_slot_counted(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio.create_task raising for the third job of a claim (a task factory's bug, say)
    fails the worker as any start that raises, and puts that job back; it used to stay
    counted as running and claimed all the same, its slot taken for good: worker.running
    said 1 after the stop, and the stats counted a job that never started."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    loop = asyncio.get_running_loop()
    jobs: list[int] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        if getattr(coro, "__qualname__", "") == "Worker._execute":
            jobs.append(1)
            if len(jobs) == 3:
                raise RuntimeError("injected bug in the task factory")
        return asyncio.Task(coro, loop=loop)

    for _ in range(5):
        t.sleepy.enqueue(conn, 0)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    loop.set_task_factory(factory)
    try:
        with pytest.raises(pgqueue.WorkerFailed, match="claim loop raised RuntimeError"):
            await asyncio.wait_for(worker.run(), GUARD)
    finally:
        loop.set_task_factory(None)
    assert states(dsn) == {"succeeded": 2, "queued": 3}
    [released] = records(caplog, "jobs_released")
    assert released.count == 3  # type: ignore[attr-defined]
    assert (worker.running, worker.stats.claimed, worker.stats.succeeded) == (0, 2, 2)


async def test_jobs_not_started_keep_their_leases_while_the_failed_worker_drains(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The jobs of a claim left unstarted by a start that raised wait for the stop while the
    worker lets its running job finish: their leases must not expire meanwhile, or other
    workers' rescue puts them back with the attempt counted (and may run them) before the
    stop gives them back."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    raise_at(monkeypatch, ClaimedJob, "context", 2)
    stuck = t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, lease=1.0, heartbeat=0.1,
                          rescue_interval=0.1, shutdown_timeout=GUARD)  # fmt: skip
    running = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(until(lambda: worker.running == 1), GUARD)
    left = [t.add.enqueue(conn, n, n) for n in range(3)]
    conn.commit()
    worker.wake()
    await asyncio.wait_for(until(lambda: bool(records(caplog, "worker_draining"))), GUARD)
    await leases_outlived(dsn, left)
    worker.cancel_local(stuck, "shutdown")
    with pytest.raises(pgqueue.WorkerFailed, match="claim loop raised RuntimeError"):
        await asyncio.wait_for(running, GUARD)
    assert query(dsn, "SELECT state, attempts, count(*) FROM pgqueue.jobs GROUP BY 1, 2") == [
        ("queued", 0, 4)
    ]


async def test_a_worker_cancelled_while_it_drains_still_makes_its_last_writes(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """run() cancelled from outside while it waited for its running jobs (stop() called, then
    the application's own shutdown cancels its task) ended there: the outcome it held stayed
    unwritten, the running job running until its lease expired, the worker's row registered.
    Now the cancellation ends the wait: the job is stopped and put back (attempt given back),
    the outcome written and the row deleted; then CancelledError goes on."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    stuck = t.sleepy.enqueue(conn, 3600)
    done = t.add.enqueue(conn, 1, 2)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, ack_interval=20,
                          shutdown_timeout=GUARD)  # fmt: skip
    running = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(until(lambda: worker.stats.succeeded == 1 and worker.running), GUARD)
    worker.stop()
    await asyncio.wait_for(until(lambda: bool(records(caplog, "worker_draining"))), GUARD)
    running.cancel()
    await asyncio.wait([running], timeout=GUARD)
    assert running.cancelled()
    assert query(dsn, "SELECT id, state, attempts FROM pgqueue.jobs ORDER BY id") == [
        (stuck, "queued", 0), (done, "succeeded", 1)
    ]  # fmt: skip
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []
    assert worker.running == 0


@pytest.mark.parametrize(("limit", "cancels"), [(0.2, 1), (3600, 2)], ids=["limit", "again"])
async def test_the_stop_of_a_cancelled_worker_is_cut_short_if_its_last_writes_hang(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    limit: float, cancels: int,
) -> None:  # fmt: skip
    """A cancelled run() whose last writes cannot end (here the job's row is locked) waits
    for them only so long (CANCELLED_STOP, shortened here), or until it is cancelled again:
    the stop is then cut short, said so, and CancelledError goes on; the job stays running
    until its lease expires. The worker's connections are closed all the same."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    monkeypatch.setattr(_worker_module, "CANCELLED_STOP", limit)
    stuck = t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, shutdown_timeout=GUARD)
    running = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(until(lambda: worker.running == 1), GUARD)
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM pgqueue.active_jobs WHERE id = %s FOR UPDATE", [stuck])
        worker.stop()
        await asyncio.wait_for(until(lambda: bool(records(caplog, "worker_draining"))), GUARD)
        running.cancel()
        if cancels == 2:
            await asyncio.wait_for(until(lambda: bool(records(caplog, "worker_cancelled"))), GUARD)
            running.cancel()
        await asyncio.wait([running], timeout=GUARD)
        holder.rollback()
    assert running.cancelled()
    [cut] = records(caplog, "worker_stop_cut")
    assert cut.levelname == "ERROR"
    [cancelled] = records(caplog, "worker_cancelled")
    assert cancelled.running == 1  # type: ignore[attr-defined]
    assert query(dsn, "SELECT state FROM pgqueue.jobs WHERE id = %s", [stuck]) == [("running",)]
    sessions = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'pgqueue %'")  # fmt: skip
    await asyncio.wait_for(until(lambda: query(dsn, sessions) == [(0,)]), GUARD)


@pytest.mark.parametrize("stopped", [False, True], ids=["claiming", "after_stop"])
async def test_a_worker_cancelled_as_it_runs_shuts_down_then_raises_the_cancellation(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture, stopped: bool
) -> None:
    """run() cancelled while it claims (no stop() before) shuts down as stop() would: it
    waits for its running job up to the shutdown timeout (0.1 s here), puts it back and
    deregisters, and then CancelledError goes on. Cancelled after stop(), before its claim
    loop saw the stop, the shutdown has begun all the same, and the cancellation hurries it:
    the job is put back at once, not after the shutdown timeout (an hour here)."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    stuck = t.sleepy.enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05,
                          shutdown_timeout=3600 if stopped else 0.1)  # fmt: skip
    running = await cancel_running(worker, stopped)
    assert running.cancelled()
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE id = %s",
                 [stuck]) == [("queued", 0)]  # fmt: skip
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []
    assert len(records(caplog, "worker_cancelled")) == stopped


outage_app = pgqueue.PgQueue()
released = threading.Event()


@outage_app.task(queue="io")
async def held_until_released() -> None:
    """Run until the test lets it end."""
    while not released.is_set():
        await asyncio.sleep(0.01)


def allow_connections(dsn: str, allowed: bool) -> None:
    """Let the test database accept new connections or not; when not, end the worker's."""
    name = str(conninfo_to_dict(dsn)["dbname"])
    other = make_conninfo(dsn, dbname="postgres")
    query(other, sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.Literal(allowed)))  # fmt: skip
    if not allowed:
        query(other, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                     " AND application_name LIKE 'pgqueue %%'", [name])  # fmt: skip


RETRIED = ("claim_error", "heartbeat_error", "maintenance_error", "ack_error", "listen_lost")
RESTORED = ("claim_restored", "heartbeat_restored", "maintenance_restored", "ack_restored")


async def logged_thrice(caplog: pytest.LogCaptureFixture, actions: list[str]) -> None:
    """Wait until each of ``actions`` has been logged three times or more."""
    await asyncio.wait_for(until(lambda: all(len(records(caplog, a)) >= 3 for a in actions)), GUARD)


# The failures in a row that a heartbeat in an outage logs: it retries every second while its
# worker holds jobs, and a line per retry was one a second. Every other path logs each.
HEARTBEAT_LOGGED = [1, 2, 4, 8, 16, 32, 64, 128, 192, 256]


def logged_failures(action: str, count: int) -> list[int]:
    """The failures in a row of the first ``count`` records of ``action`` in an outage."""
    return HEARTBEAT_LOGGED[:count] if action == "heartbeat_error" else list(range(1, count + 1))


def assert_one_traceback_an_outage(caplog: pytest.LogCaptureFixture, actions: Any) -> None:
    """Each action's records: the first with its traceback, the others without, all
    WARNINGs counting the failures in a row."""
    logged = {a: records(caplog, a) for a in actions}
    traced = {a: [bool(r.exc_info) for r in logged[a]].count(True) for a in actions}
    assert traced == dict.fromkeys(actions, 1)
    for action, rs in logged.items():
        assert rs[0].exc_info, action
        assert [r.failures for r in rs] == logged_failures(action, len(rs)), action  # type: ignore[attr-defined]
        assert {r.levelname for r in rs} == {"WARNING"}, action


def assert_restored_once(caplog: pytest.LogCaptureFixture, action: str, failed: str) -> None:
    """One INFO ``action`` record, counting every failure of the outage: each ``failed``
    record's, and those of the heartbeat's retries logged in no record of their own."""
    [restored] = records(caplog, action)
    assert restored.levelname == "INFO"
    logged = records(caplog, failed)
    if failed == "heartbeat_error":
        unlogged = logged_failures(failed, len(logged) + 1)[-1]  # the next line's failures
        assert logged[-1].failures <= restored.failures < unlogged  # type: ignore[attr-defined]
    else:
        assert restored.failures == len(logged)  # type: ignore[attr-defined]


async def test_an_outage_logs_one_traceback_per_retried_path_then_a_line_per_retry(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """While the database refused connections, each retried path of the worker (claims,
    heartbeats, maintenance, outcome writes) logged its full traceback at every try: a minute
    of outage flooded the log with the same tracebacks. Now the first failure of each path
    carries the traceback, the next ones a line each that names the error and counts the
    failures in a row (as listen_lost did already), and each path says once when it works
    again. The heartbeat, which a worker holding jobs retries every second (faster
    here), logs its 1st, 2nd, 4th... failure in a row: a line per retry was one a second."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    held_until_released.enqueue(conn)
    conn.commit()
    released.clear()
    worker = outage_app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, heartbeat=0.05,
                               rescue_interval=0.05)  # fmt: skip
    runner = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(until(lambda: worker.running == 1), GUARD)
        await asyncio.to_thread(allow_connections, dsn, False)
        try:
            await logged_thrice(caplog, [a for a in RETRIED if a != "ack_error"])
            released.set()  # the job ends: its outcome cannot be written now
            await logged_thrice(caplog, ["ack_error"])
        finally:
            await asyncio.to_thread(allow_connections, dsn, True)
        assert_one_traceback_an_outage(caplog, RETRIED)
        await asyncio.wait_for(until(lambda: all(records(caplog, a) for a in RESTORED)), GUARD)
    finally:
        released.set()
        worker.stop()
        await asyncio.wait_for(runner, GUARD)
    for action in RESTORED:
        assert_restored_once(caplog, action, action.replace("restored", "error"))
    assert states(dsn) == {"succeeded": 1}


async def test_a_scheduler_in_an_outage_logs_one_traceback_then_a_line_per_retry(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """scheduler_error, too, wrote its traceback at every pass the database refused: now
    at the first only, and scheduler_restored once the passes work again."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = pgqueue.PgQueue(dsn)

    @app.periodic("* * * * * *", name="beat")
    async def beat() -> None:
        return None

    sched = Scheduler(app.periodics.values(), Db(dsn, "scheduler"))
    stopping = asyncio.Event()
    await asyncio.to_thread(allow_connections, dsn, False)
    passes = asyncio.create_task(sched.run(stopping))
    try:
        try:
            await asyncio.wait_for(
                until(lambda: len(records(caplog, "scheduler_error")) >= 3), GUARD
            )
        finally:
            await asyncio.to_thread(allow_connections, dsn, True)
        assert_one_traceback_an_outage(caplog, ["scheduler_error"])
        await asyncio.wait_for(until(lambda: bool(records(caplog, "scheduler_restored"))), GUARD)
    finally:
        stopping.set()
        await asyncio.wait_for(passes, GUARD)
        await sched.db.close()
    assert_restored_once(caplog, "scheduler_restored", "scheduler_error")


@pytest.mark.parametrize("failing", ["ticks_prune", "jobs_prune"])
async def test_a_failed_maintenance_step_skips_none_of_the_others(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failing: str
) -> None:
    """A prune whose statement failed (a permission refused, say; here a division by zero)
    raised out of maintain() and skipped every step after it: the horizon warning, the
    claim path's vacuum and the re-registration of a pruned worker row waited for the prune
    to work again. Each step now runs; the pass
    still fails with the first error, and a second failed step gets a line of its own."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    broken = _store.Query("SELECT 1 / 0", {}, lambda rows: 0)
    monkeypatch.setattr(_store, failing, lambda *args, **kwargs: broken)
    monkeypatch.setattr(_store, "workers_prune", lambda *args, **kwargs: broken)
    ran: list[str] = []
    for name in ("horizon_holders", "active_dead_tuples"):
        original = getattr(_store, name)
        monkeypatch.setattr(
            _store, name, lambda *a, _o=original, _n=name, **k: ran.append(_n) or _o(*a, **k)
        )
    app = pgqueue.PgQueue(dsn, retention={"succeeded": 60})
    worker = app.worker(queues=["io"], vacuum_threshold=1, long_transaction_warning=60)
    assert worker._tick_pruner is not None
    worker._tick_pruner.next_run = 0.0

    async def register_again() -> None:
        ran.append("register_again")

    worker._register_again = register_again  # type: ignore[method-assign]
    try:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await worker.maintain()
    finally:
        await worker._close_connections()
    assert ran == ["horizon_holders", "active_dead_tuples", "register_again"]
    [also] = records(caplog, "maintenance_error")
    assert "prune failed too (DivisionByZero: division by zero)" in also.getMessage()


async def test_a_maintenance_pass_names_its_failed_steps_up_to_a_lost_connection(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The pass's maintenance_error line named no step, and when a later step lost the
    connection, the statement failures of the earlier steps of that pass were never logged:
    the line gave the lost connection alone. Now the line names the first failed step, and
    each later one gets a line of its own, the lost connection's too; the steps after it do
    not run."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    broken = _store.Query("SELECT 1 / 0", {}, lambda rows: 0)
    ended = _store.Query("SELECT pg_terminate_backend(pg_backend_pid())", {}, lambda rows: 0)
    monkeypatch.setattr(_store, "workers_prune", lambda *args, **kwargs: broken)
    monkeypatch.setattr(_store, "jobs_prune", lambda *args, **kwargs: ended)
    ran: list[str] = []
    original = _store.horizon_holders
    monkeypatch.setattr(
        _store, "horizon_holders", lambda *a, **k: ran.append("horizon") or original(*a, **k)
    )
    app = pgqueue.PgQueue(dsn, retention={"succeeded": 60})
    worker = app.worker(queues=["io"], rescue_interval=0.01, long_transaction_warning=60)
    try:
        await worker._maintenance_pass()
    finally:
        await worker._close_connections()
    assert ran == []
    first, too = (r.getMessage() for r in records(caplog, "maintenance_error"))
    assert first == (
        "maintenance: the workers' prune failed (DivisionByZero: division by zero), 1 in a row"
    )
    assert too.startswith("maintenance: the history's prune failed too (AdminShutdown: ")


async def test_a_connection_lost_in_a_maintenance_step_ends_the_pass_and_the_next_reconnects(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step whose connection ended (its backend terminated) ends the pass there: the steps
    after it would only wait to reconnect. The next pass opens a new connection and runs
    them all."""
    ended = _store.Query("SELECT pg_terminate_backend(pg_backend_pid())", {}, lambda rows: 0)
    workers_prune = _store.workers_prune
    monkeypatch.setattr(_store, "workers_prune", lambda *args, **kwargs: ended)
    ran: list[str] = []
    original = _store.active_dead_tuples
    monkeypatch.setattr(
        _store, "active_dead_tuples", lambda *a, **k: ran.append("vacuum") or original(*a, **k)
    )
    worker = pgqueue.PgQueue(dsn).worker(queues=["io"], vacuum_threshold=1)
    try:
        with pytest.raises(psycopg.OperationalError) as raised:
            await worker.maintain()
        assert _worker_module.unreachable(raised.value) and ran == []
        monkeypatch.setattr(_store, "workers_prune", workers_prune)
        await worker.maintain()
        assert ran == ["vacuum"]
    finally:
        await worker._close_connections()


def test_a_session_ended_by_the_server_is_unreachable_not_a_statement_failure(dsn: str) -> None:
    """The server's idle_session_timeout (57P05) and a database dropped under a connection
    (57P04) end the connection: unreachable() said they were a statement's failure, so the
    CLI said "the database refused" and a maintenance pass ran its next steps on a dead
    connection, each failing."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET idle_session_timeout = 100")  # milliseconds
        threading.Event().wait(0.5)
        with pytest.raises(psycopg.errors.IdleSessionTimeout) as ended:
            conn.execute("SELECT 1")
    assert _worker_module.unreachable(ended.value)
    assert _worker_module.unreachable(psycopg.errors.DatabaseDropped("database dropped"))
