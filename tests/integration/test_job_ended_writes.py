"""An app's job_ended hooks hear of each job's end once, as written: after an ack whose reply
was lost and that is written again, a refused outcome replaced by a failure, a retry the ack
ends cancelled; never for an outcome a failed stop left unwritten; nothing held afterwards."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from tests.helpers import (
    query,
    refuse_acks,
    run_worker_until,
    states,
    stop_with_one_asked_to_cancel,
)


def make(dsn: str) -> tuple[pgqueue.PgQueue, list[tuple[int, str, int]]]:
    """An app whose task "work" ends as its argument says, and the ends its hook heard of."""
    app = pgqueue.PgQueue(dsn, retry=pgqueue.RetryPolicy(base=0.01, cap=0.02))
    seen: list[tuple[int, str, int]] = []

    @app.task(name="work", queue="q", max_attempts=3)
    async def work(n: int) -> Any:
        if n == -1:
            raise ValueError("negative")
        if n == -2:
            return "\x00bad"  # jsonb refuses \u0000: the outcome is refused
        if n == -3:
            raise pgqueue.Retry(delay=0)
        return n

    def ended(event: pgqueue.JobEvent) -> None:
        """Note the end heard of."""
        seen.append((event.job.id, event.state, event.job.attempt))

    app.hooks.job_ended["work"] = ended
    return app, seen


def ended_all(dsn: str, n: int) -> bool:
    """Whether ``n`` jobs have ended."""
    s = states(dsn)
    return sum(s.get(k, 0) for k in ("succeeded", "failed", "cancelled")) == n


async def until_succeeded(w: pgqueue.Worker) -> None:
    """Wait until ``w`` has seen one job succeed."""
    while w.stats.succeeded != 1:
        await asyncio.sleep(0.02)


async def test_outcomes_written_again_after_lost_replies_are_heard_of_once(
    dsn: str, conn: Any
) -> None:
    """Two acks commit and lose their replies: written again (jobs_ack_again), each job's end
    (a success, a failure after retries, a refused result recorded as failed) is heard of
    once, with what was written."""
    app, seen = make(dsn)
    ids = [app.using("work").enqueue(conn, n) for n in (1, -1, -2)]
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05)
    real = w._ack_db.run
    lost: list[int] = []

    async def run(q: Any) -> Any:
        result = await real(q)
        if getattr(q, "sql", None) is _store._queries.JOBS_ACK and len(lost) < 2:
            lost.append(1)
            await w._ack_db.close()
            raise psycopg.OperationalError("injected: reply lost")
        return result

    w._ack_db.run = run  # type: ignore[method-assign]
    await run_worker_until(w, lambda: ended_all(dsn, 3), timeout=60)
    assert lost == [1, 1]
    assert sorted(seen) == sorted(
        [(ids[0], "succeeded", 1), (ids[1], "failed", 3), (ids[2], "failed", 1)]
    )
    assert w._ending == {} and w._retrying == {}


async def test_a_retry_the_ack_ends_cancelled_is_heard_of_as_cancelled(dsn: str, conn: Any) -> None:
    """A Retry whose job was asked to cancel while it ran is ended cancelled by JOBS_ACK: the
    hook hears of that end, once."""
    app, seen = make(dsn)
    job = app.using("work").enqueue(conn, -3)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, ack_interval=20)
    real = w._ack_db.run

    async def run(q: Any) -> Any:
        if getattr(q, "sql", None) is _store._queries.JOBS_ACK:  # asked as the attempt ends
            query(
                dsn, "UPDATE pgqueue.active_jobs SET cancel_requested = true WHERE id = %s", [job]
            )
        return await real(q)

    w._ack_db.run = run  # type: ignore[method-assign]
    await run_worker_until(w, lambda: ended_all(dsn, 1), timeout=60)
    assert query(dsn, "SELECT state FROM pgqueue.jobs") == [("cancelled",)]
    assert seen == [(job, "cancelled", 1)]
    assert w._ending == {}


async def test_an_outcome_a_failed_stop_left_unwritten_is_not_heard_of(dsn: str, conn: Any) -> None:
    """Every ack fails until the worker has stopped: nothing was written, so no hook runs, and
    the worker holds nothing for it afterwards."""
    app, seen = make(dsn)
    app.using("work").enqueue(conn, 1)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, shutdown_timeout=0.5, ack_interval=20)
    refuse_acks(w)
    runner = asyncio.ensure_future(w.run())
    await asyncio.wait_for(until_succeeded(w), 60)
    w.stop()
    with pytest.raises(pgqueue.PgQueueError, match="1 outcome unwritten"):
        await runner
    assert seen == [] and w._ending == {}


async def test_an_attempt_whose_lease_passed_on_is_heard_of_only_from_its_heir(
    dsn: str, conn: Any
) -> None:
    """A job's lease passes from worker A to worker B (rescued and claimed again) while A's
    attempt still runs: A's end, fenced off, is not written and not heard of; B's is, once."""
    app = pgqueue.PgQueue(dsn)
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    seen: list[tuple[str, int, int]] = []

    @app.task(name="gated", queue="q", max_attempts=3)
    async def gated() -> int:
        attempt = pgqueue.current_job().attempt
        await gates[attempt].wait()
        return attempt

    app.hooks.job_ended["gated"] = lambda e: seen.append((e.state, e.job.attempt, e.result))
    job = app.using("gated").enqueue(conn)
    conn.commit()
    a = app.worker(queues=["q"], poll_interval=0.05, lease=600, heartbeat=300)
    b = app.worker(queues=["q"], poll_interval=0.05, lease=600, heartbeat=300)
    run_a = asyncio.ensure_future(a.run())
    attempt = "SELECT attempts, state, worker_id FROM pgqueue.jobs WHERE id = %s"
    try:
        while query(dsn, attempt, [job]) != [(1, "running", a.name)]:
            await asyncio.sleep(0.02)
        # What the rescue does to an expired lease: the job is queued again.
        query(dsn, "UPDATE pgqueue.active_jobs SET state = 'queued', worker_id = NULL,"
                   " lease_expires_at = NULL WHERE id = %s", [job])  # fmt: skip
        a.stop()  # A claims no more; its attempt runs on until it ends
        run_b = asyncio.ensure_future(b.run())
        while query(dsn, attempt, [job]) != [(2, "running", b.name)]:
            await asyncio.sleep(0.02)
        gates[1].set()
        await asyncio.wait_for(run_a, 30)
        assert a.stats.succeeded == 0 and a._ending == {}
        gates[2].set()
        while states(dsn) != {"succeeded": 1}:
            await asyncio.sleep(0.02)
    finally:
        for gate in gates.values():
            gate.set()
        a.stop()
        b.stop()
        await asyncio.gather(run_a, *([run_b] if "run_b" in locals() else []))
    assert seen == [("succeeded", 2, 2)]
    assert b._ending == {}


async def test_a_job_a_workers_stop_ends_cancelled_is_heard_of_once(dsn: str, conn: Any) -> None:
    """A job asked to cancel while its attempt runs, before the worker learns of it (no hint:
    its heartbeat would), then stopped by the worker's shutdown: the shutdown's release ends it
    cancelled, not put back, an end this worker wrote. The hook hears of it, once; of a job put
    back, nothing; the worker holds nothing afterwards."""
    app = pgqueue.PgQueue(dsn)
    seen: list[tuple[int, str, int]] = []

    @app.task(name="sleeps", queue="q")
    async def sleeps() -> None:
        await asyncio.sleep(60)

    app.hooks.job_ended["sleeps"] = lambda e: seen.append((e.job.id, e.state, e.job.attempt))
    w, doomed, _ = await stop_with_one_asked_to_cancel(dsn, conn, app, "sleeps")
    assert seen == [(doomed, "cancelled", 1)]
    assert w._ending == {}


async def test_process_pool_jobs_are_heard_of_once_as_written(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs run in the process pool end as any other: the hook hears of a success, with the
    child's value, and of a child that died on the job's last attempt, failed, once each."""
    from tests.integration import tasks_app as t

    seen: list[tuple[int, str, Any]] = []

    def ended(event: pgqueue.JobEvent) -> None:
        """Note the end heard of."""
        seen.append((event.job.id, event.state, event.result))

    for name in ("tests.integration.tasks_app.process_pid", "tests.integration.tasks_app.dies"):
        monkeypatch.setitem(t.app.hooks.job_ended, name, ended)
    pid = t.process_pid.enqueue(conn)
    dies = t.app.using("tests.integration.tasks_app.dies", max_attempts=1).enqueue(conn)
    conn.commit()
    w = t.app.worker(dsn=dsn, queues=["cpu"], processes=1, poll_interval=0.05)
    await run_worker_until(w, lambda: ended_all(dsn, 2) and len(seen) == 2, timeout=120)
    [(child,)] = query(dsn, "SELECT result FROM pgqueue.jobs WHERE id = %s", [pid])
    assert sorted(seen) == [(pid, "succeeded", child), (dies, "failed", None)]
    assert child != os.getpid() and w._ending == {}


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()])
async def test_a_hook_raising_a_base_exception_is_logged_and_the_worker_goes_on(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture, exc: BaseException
) -> None:
    """A job_ended hook (a Django task_finished receiver) raising SystemExit, or another
    BaseException, stopped the worker's event loop where it stood: the outcomes it had not
    written yet were lost, its jobs left running. It is logged as any callback's error, as a
    task's SystemExit is a failure of that task, and the worker goes on."""
    app, seen = make(dsn)

    def ended(event: pgqueue.JobEvent) -> None:
        """Note the end heard of, then raise."""
        seen.append((event.job.id, event.state, event.job.attempt))
        raise exc

    app.hooks.job_ended["work"] = ended
    first = app.using("work").enqueue(conn, 1)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05)

    def then_another() -> bool:
        if seen and len(query(dsn, "SELECT id FROM pgqueue.jobs")) == 1:
            query(dsn, "SELECT pgqueue.enqueue('work', '[2]'::jsonb, queue => 'q')")
        return len(seen) == 2

    await run_worker_until(w, then_another)
    assert states(dsn) == {"succeeded": 2} and seen[0] == (first, "succeeded", 1)
    errors = [r for r in caplog.records if getattr(r, "action", None) == "callback_error"]
    assert len(errors) == 2 and errors[0].exc_info and errors[0].exc_info[0] is type(exc)
