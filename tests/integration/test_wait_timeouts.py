"""A wait with ``timeout=0`` looks once: the job finished is returned, else TimeoutError."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from pgqueue import JobStateError, _wait_hub
from pgqueue._wait import _Reconnect
from tests.helpers import run_worker_until, states
from tests.integration.test_ops_api import make_app, worker


@pytest.mark.parametrize("listen", [True, False])
async def test_a_wait_of_no_time_returns_a_job_already_finished(
    dsn: str, conn: Any, listen: bool
) -> None:
    """timeout=0 raised TimeoutError even for a finished job: wait and wait_sync now read it
    once and return it, listening or polling."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 20, 22)
    conn.commit()
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 1})
    for _ in range(20):
        assert (await app.wait(job_id, timeout=0, listen=listen)).result == 42
        assert app.wait_sync(job_id, timeout=0, listen=listen).result == 42


@pytest.mark.parametrize("listen", [True, False])
async def test_a_wait_of_no_time_raises_for_a_job_not_finished(
    dsn: str, conn: Any, listen: bool
) -> None:
    """timeout=0 for a job still queued: TimeoutError once it is read, waiting for nothing."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 20, 22)
    conn.commit()
    with pytest.raises(TimeoutError, match=f"job {job_id} did not finish within 0 s") as raised:
        await app.wait(job_id, timeout=0, poll_interval=60, listen=listen)
    assert raised.value.__cause__ is None  # read, not a read stopped
    with pytest.raises(TimeoutError, match=f"job {job_id} did not finish within 0 s") as raised:
        app.wait_sync(job_id, timeout=0, poll_interval=60, listen=listen)
    assert raised.value.__cause__ is None


@pytest.mark.parametrize("listen", [True, False])
async def test_a_wait_of_no_time_reads_the_row_of_its_job(dsn: str, listen: bool) -> None:
    """timeout=0 for a job there is no row of: JobStateError, as with any timeout, since the
    row is looked for (the hub's waiter raised TimeoutError before the hub had read)."""
    app = make_app(dsn)
    with pytest.raises(JobStateError, match="there is no job 424242"):
        await app.wait(424242, timeout=0, listen=listen)
    with pytest.raises(JobStateError, match="there is no job 424242"):
        app.wait_sync(424242, timeout=0, listen=listen)


async def test_a_waiter_that_has_read_its_job_raises_at_its_timeout(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter of the hub waited for its first read up to 3 s after its call, and then on
    to those 3 s though that read had found its job queued: timeout=0.5 raised at 3 s. Once
    read, it raises at its timeout (made here 10 minutes, so that the test cannot pass by it)."""
    monkeypatch.setattr(_wait_hub, "FIRST_LOOK", 600.0)
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 20, 22)
    conn.commit()
    with pytest.raises(TimeoutError, match=f"job {job_id} did not finish within 1 s"):
        await asyncio.wait_for(app.wait(job_id, timeout=1, poll_interval=60), 20)


def test_a_read_late_in_a_listening_wait_sync_is_bounded_by_the_time_left(
    dsn: str, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wait_sync bounded its reads once, for the session, by the time left when it connected:
    a read held by a lock on the history near the end of a 100 s wait ran on for up to 100 s
    more. Each read is bounded by the time left when it starts (here, 1 s: the least)."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 20, 22)
    conn.commit()
    spent, locked = [0.0], threading.Event()
    left, next_read = _Reconnect.left, _Reconnect.next_read

    def first_read_done(self: _Reconnect) -> float:
        if not spent[0]:  # the clock jumps to 0.5 s before the deadline, the history locked
            spent[0] = 99.5
            locked.wait(10)
        return next_read(self)

    monkeypatch.setattr(_Reconnect, "left", lambda self: left(self) - spent[0])
    monkeypatch.setattr(_Reconnect, "next_read", first_read_done)
    raised: list[BaseException] = []
    waiter = threading.Thread(target=wait_for, args=(app, job_id, raised))
    waiter.start()
    try:
        while not spent[0] and waiter.is_alive():
            waiter.join(0.01)
        conn.execute("LOCK TABLE pgqueue.finished_jobs IN ACCESS EXCLUSIVE MODE")
        locked.set()
        waiter.join(20)  # not the 100 s of the timeout
        assert not waiter.is_alive()
    finally:
        conn.commit()
        waiter.join(120)
    [error] = raised
    assert isinstance(error, TimeoutError)
    assert isinstance(
        error.__cause__, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
    )


def wait_for(app: Any, job_id: int, raised: list[BaseException]) -> None:
    """wait_sync for ``job_id`` for 100 s, polling every 0.2 s; what it raises in ``raised``."""
    try:
        app.wait_sync(job_id, timeout=100, poll_interval=0.2)
    except BaseException as exc:  # the assertion shows it
        raised.append(exc)
