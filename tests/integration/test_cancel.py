"""app.cancel: queued jobs end at once; running ones are stopped by their worker."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

import pgqueue
from pgqueue._worker._listener import listen
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t

LEASE = 90.0  # heartbeats every 30 s: only the cancel hint can stop the job sooner


def _worker(dsn: str) -> pgqueue.Worker:
    return t.app.worker(dsn=dsn, queues=["io", "cpu"], poll_interval=0.05, lease=LEASE,
                        processes=1)  # fmt: skip


def test_cancelling_a_queued_job_moves_it_to_history(dsn: str, conn) -> None:
    """A queued job becomes cancelled at once; cancelling it again is a no-op."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    assert t.app.cancel(conn, job_id) == "cancelled"
    conn.commit()
    assert t.app.cancel(conn, job_id) is None
    assert t.app.cancel(conn, 10**9) is None
    conn.commit()
    assert query(dsn, "SELECT state, last_error FROM pgqueue.jobs") == [
        ("cancelled", "cancelled on request")
    ]


async def test_acancel_is_the_async_twin(dsn: str, aconn) -> None:
    """acancel cancels a queued job in the caller's async transaction."""
    job_id = await t.add.aenqueue(aconn, 1, 2)
    assert await t.app.acancel(aconn, job_id) == "cancelled"
    await aconn.commit()
    assert states(dsn) == {"cancelled": 1}


@pytest.mark.parametrize(("task", "args"), [
    (t.sleepy, (60,)), (t.cooperative, (60,)), (t.spin, (60,)), (t.sleeps_in_a_group, (60,)),
])  # fmt: skip
async def test_cancelling_a_running_job_stops_it_before_the_next_heartbeat(
    dsn: str, task: pgqueue.Task[..., object], args: tuple[float]
) -> None:
    """Async, thread and process tasks: flagged, hinted, stopped, and ended cancelled; an
    async task whose TaskGroup turns the CancelledError into its tasks' errors too."""
    with psycopg.connect(dsn) as conn:
        job_id = task.enqueue(conn, *args)
        conn.commit()

    async def cancel_when_running() -> None:
        while states(dsn).get("running") != 1:
            await asyncio.sleep(0.05)
        with psycopg.connect(dsn) as conn:
            assert t.app.cancel(conn, job_id) == "requested"
            conn.commit()

    canceller = asyncio.create_task(cancel_when_running())
    w = _worker(dsn)
    await run_worker_until(w, lambda: states(dsn).get("cancelled") == 1, timeout=w.heartbeat)
    await canceller
    assert query(dsn, "SELECT state, attempts, last_error FROM pgqueue.jobs") == [
        ("cancelled", 1, "cancelled on request")
    ]


async def test_a_cancel_sent_before_the_listener_listens_is_caught_up_at_once(dsn: str) -> None:
    """The claimer may claim before the first LISTEN: a cancel notification sent in between
    reaches nobody, so the listener asks for an early heartbeat as soon as it listens."""
    hints: list[str | None] = []
    stopping = asyncio.Event()

    def on_cancel(worker: str | None) -> None:
        hints.append(worker)
        stopping.set()

    listener = asyncio.create_task(listen(dsn, {"io"}, lambda: None, stopping, on_cancel=on_cancel))
    await asyncio.wait_for(listener, 10)
    assert hints == [None]  # no notification was sent: the catch-up call, and only it


async def test_a_cancel_requested_before_a_failed_attempt_ends_the_job_cancelled(
    dsn: str, conn
) -> None:
    """A cancel requested while an attempt runs is not forgotten when that attempt fails before
    a heartbeat read the flag: the job ends cancelled (as its rescue would end it) instead of
    being retried. A worker that cannot listen (behind a pooler) has a heartbeat's time for
    that to happen."""
    job_id = t.fails_slowly.enqueue(conn, 0.5)
    conn.commit()
    w = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, lease=LEASE, listen=False)
    runner = asyncio.create_task(w.run())
    try:
        while w.running == 0:
            await asyncio.sleep(0.01)
        assert t.app.cancel(conn, job_id) == "requested"
        conn.commit()
        while states(dsn).keys() & {"queued", "running"}:
            await asyncio.sleep(0.02)
    finally:
        w.stop()
        await runner
    assert query(dsn, "SELECT state, attempts, last_error FROM pgqueue.jobs") == [
        ("cancelled", 1, "cancelled on request")
    ]
