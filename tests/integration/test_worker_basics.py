"""A worker runs committed jobs and records their outcomes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import signal
import time
import weakref
from dataclasses import replace

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from pgqueue._worker._executor import ClaimedJob
from tests.helpers import query, run_worker_until, states, terminate
from tests.integration import tasks_app as t


def worker(dsn: str, **options: object) -> pgqueue.Worker:
    """A fast-polling worker of the test app on both test queues."""
    options.setdefault("queues", ["io", "cpu"])
    return t.app.worker(dsn=dsn, poll_interval=0.05, **options)


async def test_committed_job_runs_and_stores_its_result(dsn: str, conn) -> None:
    """commit → the job runs, and its return value is stored as JSON in result."""
    job_id = t.add.enqueue(conn, 2, 3)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("succeeded") == 1)
    assert query(dsn, "SELECT state, result, attempts FROM pgqueue.jobs WHERE id = %s",
                 [job_id]) == [("succeeded", 5, 1)]  # fmt: skip


async def test_failures_retry_until_failed_with_tracebacks(dsn: str, conn) -> None:
    """A raising task is retried up to max_attempts, then failed, with every traceback kept."""
    job_id = t.always_fails.enqueue(conn, "kaput")
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("failed") == 1)
    [(attempts, last_error, errors)] = query(
        dsn, "SELECT attempts, last_error, errors FROM pgqueue.jobs WHERE id = %s", [job_id]
    )
    assert attempts == 3
    assert last_error == "RuntimeError: kaput"
    assert [e["attempt"] for e in errors] == [1, 2, 3]
    assert all("always_fails" in e["traceback"] for e in errors)


async def test_sync_tasks_run_in_threads_and_process_tasks_in_children(dsn: str, conn) -> None:
    """executor='process' runs in another process; plain functions run in this one."""
    in_thread = t.sync_pid.enqueue(conn)
    in_process = t.process_pid.enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("succeeded") == 2, timeout=60)
    results = dict(query(dsn, "SELECT id, result FROM pgqueue.jobs"))
    assert results[in_thread] == os.getpid()
    assert results[in_process] != os.getpid()


async def test_unknown_task_is_retried_then_failed_and_nothing_is_imported(
    dsn: str, conn, tmp_path
) -> None:
    """A row naming an unregistered dotted path (os.system) fails as unknown; nothing runs."""
    marker = tmp_path / "pwned"
    query(dsn, "INSERT INTO pgqueue.active_jobs (task, queue, args, max_attempts) "
               "VALUES ('os.system', 'io', %s::jsonb, 2)", [f'["touch {marker}"]'])  # fmt: skip
    app = pgqueue.PgQueue(dsn, retry=pgqueue.RetryPolicy(base=0.01, cap=0.02), unknown_task_delay=0)
    w = app.worker(queues=["io"], poll_interval=0.05)
    await run_worker_until(w, lambda: states(dsn).get("failed") == 1)
    assert query(dsn, "SELECT attempts, last_error FROM pgqueue.jobs") == [
        (2, "unknown task 'os.system'")
    ]
    assert not marker.exists()


@pytest.mark.parametrize(("floor", "low", "high"), [(None, 60, 90), (600, 600, 900)])
async def test_an_unknown_tasks_retry_waits_out_a_rolling_deploy(
    dsn: str, floor: float | None, low: float, high: float
) -> None:
    """The retries of an unknown task's job followed the retry policy: with the default one,
    all three attempts were over within about 6 s, before a deploy rolling out had brought up
    a worker that knows the task. Its retry now waits at least unknown_task_delay (60 s by
    default), drawn up to half as long again so that such jobs do not all return at once."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (task, queue, max_attempts) "
               "VALUES ('not.deployed.yet', 'io', 3)")  # fmt: skip
    extra = {} if floor is None else {"unknown_task_delay": floor}
    app = pgqueue.PgQueue(dsn, **extra)
    w = app.worker(queues=["io"], poll_interval=0.05)
    retried = [("queued", 1)]
    await run_worker_until(
        w, lambda: query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == retried
    )
    [(state, wait, error)] = query(
        dsn, "SELECT state, extract(epoch FROM run_at - now())::float, last_error FROM pgqueue.jobs"
    )
    assert (state, error) == ("queued", "unknown task 'not.deployed.yet'")
    assert low - 5 <= wait <= high


async def test_retry_snoozes_without_spending_an_attempt(dsn: str, conn) -> None:
    """Raising pgqueue.Retry runs the job again without counting a failure."""
    job_id = t.snoozes_once.enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("succeeded") == 1)
    assert query(dsn, "SELECT attempts, errors FROM pgqueue.jobs WHERE id = %s", [job_id]) == [
        (1, [])
    ]


async def test_cancel_raised_by_a_task_ends_the_job_cancelled(dsn: str, conn) -> None:
    """Raising pgqueue.Cancel ends the job as cancelled after one attempt."""
    t.cancels_itself.enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("cancelled") == 1)
    assert query(dsn, "SELECT attempts, last_error FROM pgqueue.jobs") == [
        (1, "cancelled: not needed any more")
    ]


async def test_async_task_over_its_timeout_is_retried_then_failed(dsn: str, conn) -> None:
    """An async task that exceeds its timeout is cancelled and counted as a failure."""
    t.too_slow.enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("failed") == 1)
    assert query(dsn, "SELECT attempts, last_error FROM pgqueue.jobs") == [
        (2, "timed out after 0.2 s")
    ]


async def test_a_tasks_own_timeout_error_is_not_reported_as_the_jobs_timeout(
    dsn: str, conn
) -> None:
    """A TimeoutError the task raised itself (its own wait_for, a socket's timeout) was
    reported as the job's timeout expiring: "timed out after None s" for a job without one,
    "timed out after 60 s" for one that had run for milliseconds. It is a failure like any."""
    t.raises_its_own_timeout.enqueue(conn)
    t.raises_its_own_timeout.using(timeout=60).enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("failed") == 2)
    errors = query(dsn, "SELECT last_error FROM pgqueue.jobs ORDER BY id")
    assert errors == [("TimeoutError",), ("TimeoutError",)]


@pytest.mark.parametrize(
    ("task", "timeout"),
    [
        (t.raises_timeout_error, None),
        (t.raises_timeout_error, 30),
        (t.raises_timeout_error_in_thread, None),
    ],
)
async def test_a_timeout_error_the_task_raises_is_its_own_error(
    dsn: str, conn, task: pgqueue.Task[[], None], timeout: float | None
) -> None:
    """A TimeoutError the task raises itself (a socket's, a wait_for's) is recorded as that
    error; it said "timed out after None s" (no timeout set), or blamed a limit not reached."""
    task.using(timeout=timeout).enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("failed") == 1)
    [(last_error, errors)] = query(dsn, "SELECT last_error, errors FROM pgqueue.jobs")
    assert last_error.startswith("TimeoutError: ") and "timed out after" not in last_error
    assert errors[0]["traceback"].rstrip().endswith(last_error)


async def test_a_coroutine_that_ignores_its_timeout_is_logged_once(
    dsn: str, conn, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async task that swallows its timeout's CancelledError runs on, its job running,
    and nothing said so: a job_overran WARNING names it once its grace has passed, once for
    the attempt however many heartbeats follow; a task its timeout stops is not named."""
    monkeypatch.setattr("pgqueue._worker._worker.OVERRUN_GRACE", 0.3)
    stubborn = t.ignores_its_timeout.enqueue(conn, 1.5)
    t.too_slow.enqueue(conn)
    conn.commit()
    await run_worker_until(
        worker(dsn, lease=3, heartbeat=0.05), lambda: states(dsn).get("failed") == 2
    )
    overran = [r for r in caplog.records if getattr(r, "action", "") == "job_overran"]
    assert [(r.levelname, r.__dict__["job_id"], r.__dict__["task"]) for r in overran] == [
        ("WARNING", stubborn, t.ignores_its_timeout.name)
    ]
    assert (overran[0].__dict__["timeout"], overran[0].__dict__["reason"]) == (0.2, "timeout")
    assert overran[0].__dict__["running_s"] >= 0.5


async def test_a_thread_that_outlives_its_timeout_is_logged(
    dsn: str, conn, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread task past its timeout fails the attempt, but its thread runs on, holding its
    slot, and nothing said so: a job_overran WARNING names it once its grace has passed."""
    monkeypatch.setattr("pgqueue._worker._executor.OVERRUN_GRACE", 0.3)
    job_id = t.outlives_its_timeout_in_a_thread.enqueue(conn, 1.5)
    conn.commit()

    def logged() -> bool:
        return any(getattr(r, "action", "") == "job_overran" for r in caplog.records)

    await run_worker_until(worker(dsn), logged)
    [record] = [r for r in caplog.records if getattr(r, "action", "") == "job_overran"]
    assert (record.levelname, record.__dict__["job_id"], record.__dict__["reason"]) == (
        "WARNING",
        job_id,
        "timeout",
    )
    assert query(dsn, "SELECT state, last_error FROM pgqueue.jobs") == [
        ("failed", "timed out after 0.2 s")
    ]


@pytest.mark.parametrize(
    ("task", "raised"),
    [
        (
            t.swallows_its_timeout,
            "TimeoutError: the task went on after its timeout cancelled it, and returned",
        ),
        (t.turns_its_timeout_into_another_error, "ConnectionAbortedError: request aborted"),
    ],
)
async def test_an_attempt_that_outlives_its_timeout_fails_timed_out(
    dsn: str, conn, task: pgqueue.Task[[], object], raised: str
) -> None:
    """An async task that catches its timeout's CancelledError and returns, or raises another
    error, still fails as timed out; the first was recorded as succeeded, the second as that
    other error. The traceback says what the task did."""
    task.enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("failed") == 1)
    [(last_error, errors)] = query(dsn, "SELECT last_error, errors FROM pgqueue.jobs")
    assert last_error == "timed out after 0.2 s"
    assert errors[0]["traceback"].rstrip().endswith(raised)


@pytest.mark.parametrize("how", ["retry", "cancel"])
async def test_retry_or_cancel_raised_once_the_timeout_expired_is_the_timeout(
    dsn: str, conn, how: str
) -> None:
    """An attempt whose timeout expired fails as timed out, and is retried while attempts
    are left, even when the task (or a middleware) turns the cancellation into Retry or
    Cancel: Retry, which gives its attempt back, ran a job that always overran for ever with
    no error recorded, and Cancel ended it without its retries, blaming no timeout."""
    t.steers_after_its_timeout.enqueue(conn, how)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("failed") == 1)
    [(attempts, last_error, errors)] = query(
        dsn, "SELECT attempts, last_error, errors FROM pgqueue.jobs"
    )
    assert (attempts, last_error) == (2, "timed out after 0.2 s")
    raised = "pgqueue.Retry: retry in 0 s" if how == "retry" else "pgqueue.Cancel: gave up"
    assert all(e["traceback"].rstrip().endswith(raised) for e in errors)


@pytest.mark.parametrize("store_result", [True, False])
async def test_a_process_task_value_that_cannot_come_back_is_not_retried(
    dsn: str, conn, tmp_path, monkeypatch: pytest.MonkeyPatch, store_result: bool
) -> None:
    """A process task's return value pickle cannot send back from the child fails the job at
    once, as a value JSON cannot hold does: its work is done. It was retried (the task ran
    max_attempts times), even with store_result=False, where the value is not wanted at all."""
    task = t.process_returns_a_generator
    monkeypatch.setattr(task, "options", replace(task.options, store_result=store_result))
    ledger = tmp_path / "ledger"
    task.enqueue(conn, str(ledger))
    conn.commit()
    ended = "failed" if store_result else "succeeded"
    await run_worker_until(worker(dsn), lambda: states(dsn).get(ended) == 1, timeout=60)
    assert ledger.read_text() == "ran\n"
    [(attempts, last_error)] = query(dsn, "SELECT attempts, last_error FROM pgqueue.jobs")
    assert attempts == 1
    if store_result:
        assert last_error.startswith("the return value could not be sent back from its child")


async def test_a_process_jobs_timeout_does_not_count_its_wait_for_a_free_child(
    dsn: str, conn, tmp_path
) -> None:
    """A process job claimed while every child is busy (more slots than processes) waits for
    one before it runs: its timeout counted that wait, and it failed as timed out without
    having run at all. Its timeout starts when a child is free for it."""
    gate = tmp_path / "gate"
    first = t.process_waits_for.enqueue(conn, str(gate))
    conn.commit()
    second: list[int] = []
    waiting_since: list[float] = []

    def done() -> bool:  # in a thread: a second job once the first holds the only child
        state = dict(query(dsn, "SELECT id, state FROM pgqueue.jobs"))
        if not second and state[first] == "running":
            with psycopg.connect(dsn) as other:  # its file exists: it returns once it runs
                second.append(t.process_waits_for.using(timeout=1).enqueue(other, str(tmp_path)))
        elif second and not gate.exists() and state.get(second[0], "queued") != "queued":
            waiting_since[:] = waiting_since or [time.monotonic()]  # claimed: its clock runs
            if time.monotonic() - waiting_since[0] > 3:  # well past its timeout, waiting
                gate.touch()
        return gate.exists() and "running" not in state.values()

    w = worker(dsn, queues=["cpu:2"], processes=1)
    await run_worker_until(w, done, timeout=90)
    assert query(dsn, "SELECT state, attempts, result FROM pgqueue.jobs ORDER BY id") == [
        ("succeeded", 1, "opened"), ("succeeded", 1, "opened")
    ]  # fmt: skip


async def test_burst_worker_exits_when_nothing_is_runnable(dsn: str, conn) -> None:
    """--burst: the worker returns by itself once the queue is empty."""
    t.add.enqueue_many(conn, [((i, i), {}) for i in range(50)])
    conn.commit()
    await worker(dsn, burst=True).run()
    assert states(dsn) == {"succeeded": 50}


async def test_a_burst_worker_ends_beside_locked_jobs_of_tasks_it_does_not_know(
    dsn: str, conn
) -> None:
    """A job of another app's task that another transaction holds (pgqueue.testing's drain
    holds them so) is not one this worker could run: it ends instead of waiting for it."""
    t.add.enqueue(conn, 1, 1)
    conn.execute(
        "INSERT INTO pgqueue.active_jobs (queue, task, args, kwargs) VALUES ('io', 'x', '[]', '{}')"
    )
    conn.commit()
    conn.execute("SELECT FROM pgqueue.active_jobs WHERE task = 'x' FOR KEY SHARE")
    async with asyncio.timeout(60):  # a hang fails the test instead of the run
        await worker(dsn, burst=True).run()
    conn.rollback()
    assert query(dsn, "SELECT task, state, attempts FROM pgqueue.jobs ORDER BY id") == [
        (t.add.name, "succeeded", 1), ("x", "queued", 0),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "lock",
    [
        "SELECT FROM pgqueue.active_jobs WHERE id = %s FOR UPDATE",
        "SELECT FROM pgqueue.active_jobs WHERE id = %s FOR KEY SHARE",
        "UPDATE pgqueue.active_jobs SET priority = 0 WHERE id = %s",
    ],
)
async def test_a_burst_worker_ends_beside_its_own_jobs_another_transaction_locks(
    dsn: str, conn, caplog: pytest.LogCaptureFixture, lock: str
) -> None:
    """A runnable job of this worker's tasks that another transaction holds (a test's open
    transaction, a long SELECT ... FOR UPDATE) is one no claim can take: the burst worker
    ran the rest and ends, saying how many it left locked (it counted the job as runnable,
    and never ended)."""
    held, free = t.add.enqueue_many(conn, [((1, 1), {}), ((2, 2), {})])
    conn.commit()
    conn.execute(lock, [held])
    with caplog.at_level(logging.INFO, logger="pgqueue.worker"):
        async with asyncio.timeout(60):  # a hang fails the test instead of the run
            await worker(dsn, burst=True).run()
    conn.rollback()
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs ORDER BY id") == [
        (held, "queued"), (free, "succeeded"),
    ]  # fmt: skip
    [left] = [r for r in caplog.records if getattr(r, "action", "") == "burst_left_locked"]
    assert left.count == 1


async def test_worker_refuses_a_database_without_the_schema(empty_dsn: str) -> None:
    """A worker on an unmigrated database stops with a message naming the command to run."""
    with pytest.raises(pgqueue.SchemaError, match="run `pgqueue migrate`"):
        await worker(empty_dsn).run()


async def test_a_full_queue_is_claimed_again_as_soon_as_a_slot_frees(dsn: str, conn) -> None:
    """With one slot, jobs run back to back without waiting for a poll or a notification."""
    t.add.enqueue_many(conn, [((i, i), {}) for i in range(5)])
    conn.commit()
    w = t.app.worker(dsn=dsn, queues={"io": 1, "cpu": 3}, poll_interval=60, listen=False)
    await run_worker_until(w, lambda: states(dsn).get("succeeded") == 5, timeout=20)


async def test_a_result_that_is_not_json_fails_without_a_retry(dsn: str, conn) -> None:
    """A task whose return value cannot be stored ends failed at once: its work is done."""
    job_id = t.returns_a_set.enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("failed") == 1)
    [(attempts, error)] = query(
        dsn, "SELECT attempts, last_error FROM pgqueue.jobs WHERE id = %s", [job_id]
    )
    assert attempts == 1
    assert error.startswith("the return value is not JSON-serialisable")


def claimed(task: str, timeout: float | None = None) -> ClaimedJob:
    """A claimed row of ``task`` as the claimer would hand it over."""
    return ClaimedJob(1, "io", task, [], {}, 1, 3, timeout, {})


async def test_a_timed_jobs_task_is_freed_when_it_ends_without_the_garbage_collector(
    dsn: str,
) -> None:
    """Running a job with a timeout leaves no reference cycle behind: its asyncio task is freed
    as soon as nothing refers to it, not at the collector's next pass."""
    job = replace(claimed(t.sleepy.name, timeout=30), args=[0])
    executor = worker(dsn)._executor
    gc.disable()
    try:
        running = asyncio.ensure_future(executor.run(job, job.context()))
        assert (await running).state == "succeeded"
        ended = weakref.ref(running)
        del running
        await asyncio.sleep(0)  # the loop lets go of the callbacks that woke it up
        assert ended() is None
    finally:
        gc.enable()


def test_only_coroutines_without_await_run_without_a_task(dsn: str) -> None:
    """Inline: no await, on the loop, no timeout, no middleware, not a suspect."""
    executor = worker(dsn)._executor
    assert executor.runs_inline(claimed(t.add.name))
    assert not executor.runs_inline(claimed(t.add.name, timeout=5))
    assert not executor.runs_inline(replace(claimed(t.add.name), crashed=True))
    assert not executor.runs_inline(claimed(t.sleepy.name))  # awaits
    assert not executor.runs_inline(claimed(t.sync_pid.name))  # a thread
    assert not executor.runs_inline(claimed("not.registered"))
    app = pgqueue.PgQueue(dsn)
    app.task(name="inline")(t.add.fn)
    app.middleware(lambda job, call_next: call_next())
    assert not app.worker()._executor.runs_inline(claimed("inline"))


class CountingApp(pgqueue.PgQueue):
    """An app that counts how often each task is looked up by name."""

    looked_up: list[str] = []

    def get_task(self, name: str) -> pgqueue.Task[object, object] | None:  # type: ignore[override]
        self.looked_up.append(name)
        return super().get_task(name)


async def test_the_worker_looks_a_jobs_task_up_once_to_start_and_run_it(dsn: str) -> None:
    """Deciding how to run a job, running it and finding its on_success callback share one
    look-up of its task (an app's get_task may cost: Django's wraps the function)."""
    app = CountingApp(dsn)
    app.task(name="inline", queue="io")(t.add.fn)
    app.task(name="timed", queue="io", timeout=30)(t.add.fn)
    with psycopg.connect(dsn) as conn:
        for name in ("inline", "timed"):
            app.using(name).enqueue(conn, 1, 2)
    app.looked_up = []
    await app.worker(dsn=dsn, queues=["io"], burst=True, scheduler=False).run()
    assert states(dsn) == {"succeeded": 2}
    assert sorted(app.looked_up) == ["inline", "timed"]


async def test_inline_jobs_each_get_their_own_context(dsn: str, conn) -> None:
    """Jobs run without a task still see their own job and never each other's context."""
    ids = t.marks_context.enqueue_many(conn, [((i,), {}) for i in range(1, 41)])
    conn.commit()
    await run_worker_until(worker(dsn, concurrency=40), lambda: states(dsn) == {"succeeded": 40})
    results = dict(query(dsn, "SELECT id, result FROM pgqueue.jobs"))
    assert {job_id: results[job_id] for job_id in ids} == {job_id: [0, job_id] for job_id in ids}


async def test_inline_jobs_claimed_before_a_stop_are_run_and_acknowledged(dsn: str, conn) -> None:
    """A batch claimed just before shutdown still runs and is written (as tasks would be)."""
    t.add.enqueue_many(conn, [((i, 1), {}) for i in range(5)])
    conn.commit()
    w = worker(dsn)
    claim = await w._claim_db.run(_store.jobs_claim(w.name, {"io": 10}, 30))
    for row in claim.rows:
        w._start_job(ClaimedJob(*row))
    assert w.running == 5  # claimed, not run yet
    await w._shutdown([])
    assert w.running == 0
    assert states(dsn) == {"succeeded": 5}


async def test_a_burst_worker_outlives_a_dropped_acker_connection(dsn: str, conn) -> None:
    """Burst mode's last look (flush, count what is runnable) retries a dropped connection
    like every other statement instead of ending the worker with its error."""
    t.sleepy.enqueue(conn, 0.5)
    conn.commit()
    w = worker(dsn, burst=True, ack_interval=5)  # the burst check flushes before the acker
    runner = asyncio.create_task(w.run())
    while w.running == 0:
        await asyncio.sleep(0.01)
    terminate(dsn, "acker")
    await asyncio.wait_for(runner, 30)
    assert states(dsn) == {"succeeded": 1}


async def test_a_cancelled_error_raised_by_the_task_fails_the_attempt(dsn: str, conn) -> None:
    """A CancelledError the task raises itself (no cancel of the worker's) is a failure like any
    other: recorded at once, not left running until its lease expires as "worker lost"."""
    job_id = t.raises_cancelled_error.enqueue(conn)
    conn.commit()
    await run_worker_until(worker(dsn), lambda: states(dsn).get("failed") == 1, timeout=5)
    assert query(dsn, "SELECT attempts, last_error FROM pgqueue.jobs WHERE id = %s",
                 [job_id]) == [(1, "CancelledError")]  # fmt: skip


async def test_a_thread_given_up_on_that_raises_later_raises_nowhere(dsn: str, conn) -> None:
    """What a timed-out thread raises after its attempt ended stays with that thread: its
    slot comes back, and nothing reaches the event loop's handler of lost errors."""
    lost: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: lost.append(context))
    t.overruns_then_raises.enqueue(conn, 0.6)
    conn.commit()
    w = worker(dsn, queues={"io": 1})
    await run_worker_until(w, lambda: states(dsn).get("failed") == 1 and w._free == {"io": 1})
    gc.collect()
    assert [context.get("exception") for context in lost] == []


async def test_settle_never_raises_what_an_abandoned_thread_raised(dsn: str) -> None:
    """Not even SystemExit, which would end the worker's event loop (a task's SystemExit must
    not stop the worker)."""
    executor = worker(dsn)._executor
    for error in (RuntimeError("late"), SystemExit(3)):
        abandoned: concurrent.futures.Future[None] = concurrent.futures.Future()
        abandoned.set_exception(error)
        executor._stragglers[1, 1] = abandoned
        job = claimed(t.sync_pid.name)
        settling = executor.settling(job, job.context(), time.monotonic())
        assert settling is not None
        await settling
    # Settled once: the worker waits for no thread of that attempt again.
    assert executor.settling(job, job.context(), time.monotonic()) is None


async def test_run_removes_the_signal_handlers_it_installed(dsn: str) -> None:
    """Once run() returns, SIGTERM and SIGINT are no longer the stopped worker's: a second
    SIGINT used to os._exit() whatever the program went on to do."""
    w = worker(dsn)
    w.stop()
    await w.run(install_signal_handlers=True)
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGINT)
    assert not loop.remove_signal_handler(signal.SIGTERM)


async def test_a_worker_stopped_while_starting_leaves_no_connection_opening(dsn: str) -> None:
    """Stopped before its start was over, a worker returned from _start without waiting for
    the claimer's connection it was opening: the connection came after the shutdown had
    closed the others, and stayed open, a server session of a stopped worker, for as long
    as the program went on. (The connect is held back here so that it is still opening.)"""
    w = worker(dsn)
    opened = w._claim_db.connection
    release = asyncio.Event()

    async def slow_open() -> psycopg.AsyncConnection:
        await release.wait()
        return await opened()

    w._claim_db.connection = slow_open  # type: ignore[method-assign]
    w.stop()
    asyncio.get_running_loop().call_later(0.3, release.set)
    await w.run()
    await asyncio.sleep(0.6)  # the connect, had it been left running, is over
    assert w._claim_db._conn is None or w._claim_db._conn.closed


async def test_a_worker_serving_none_of_its_tasks_queues_says_so(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`pgqueue --app orders:app worker` without --queues serves queue default while the
    app's tasks are sent to io and cpu: it ran nothing, and said nothing. It warns, naming
    the queues it serves and theirs. Queues chosen (a worker kept for jobs sent there with
    using(queue=...), or a typo) are said at INFO: a warning at every start of a worker meant
    so could not be silenced. A worker serving one of theirs says nothing."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)  # its own: other tests register tasks on the shared test app
    app.task(name="a", queue="io")(lambda: None)
    app.task(name="b", queue="cpu")(lambda: None)
    await app.worker(burst=True).run()
    await app.worker(queues=["nobody"], burst=True).run()
    await app.worker(queues=["nobody", "io"], burst=True).run()
    records = [r for r in caplog.records if getattr(r, "action", None) == "no_task_queue_served"]
    assert [(r.levelno, r.queues) for r in records] == [  # type: ignore[attr-defined]
        (logging.WARNING, ["default"]), (logging.INFO, ["nobody"]),
    ]  # fmt: skip
    assert (
        records[0]
        .getMessage()
        .endswith(
            "serves queue default, to which none of its app's tasks is sent by default (they go to"
            " cpu, io): serve theirs, e.g. --queues cpu,io (Worker(queues=...) in Python)"
        )
    )


async def test_a_worker_serving_its_periodic_tasks_queue_does_not_warn(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A schedule sends its jobs to its own queue (``app.periodic(..., queue="reports")`` of
    a task on queue default): a worker serving that queue runs them, yet it warned that none
    of its app's tasks went there, and told it to serve queue default instead."""
    caplog.set_level(logging.WARNING, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)
    app.periodic("0 0 1 1 *", queue="reports")(app.task(name="report")(lambda: None))
    await pgqueue.Worker(app, queues=["reports"], burst=True).run()
    assert not [r for r in caplog.records if getattr(r, "action", None) == "no_task_queue_served"]


async def test_a_stopped_worker_says_what_it_ran(
    dsn: str, conn, caplog: pytest.LogCaptureFixture
) -> None:
    """The tutorial's burst worker logged started, stopping and stopped: at the default level
    nothing said its jobs ran. Its last line counts the attempts it ended, by outcome."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    t.add.enqueue(conn, 1, 2)
    t.add.enqueue(conn, 3, 4)
    t.cancels_itself.enqueue(conn)
    conn.commit()
    await worker(dsn, burst=True).run()
    [record] = [r for r in caplog.records if getattr(r, "action", None) == "worker_stopped"]
    assert record.getMessage().endswith(
        " stopped: jobs claimed 3 (2 succeeded, 0 failed, 0 retried, 0 rescheduled, 1 cancelled)"
    )
