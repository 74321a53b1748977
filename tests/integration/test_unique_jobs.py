"""Unique jobs: one active job per key, duplicates never abort the caller's transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from pgqueue._store import Outcome
from tests.helpers import query, run_worker_until, states


def make_app(dsn: str) -> tuple[pgqueue.PgQueue, pgqueue.Task[[int], int]]:
    """An app with one task."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="charge")
    async def charge(order: int) -> int:
        return order

    return app, charge


def test_second_enqueue_returns_the_existing_job(dsn: str, conn) -> None:
    """While the first job is queued, the same key returns its id and inserts nothing."""
    _app, charge = make_app(dsn)
    first = charge.using(unique_key="order-42").enqueue(conn, 42)
    conn.commit()
    second = charge.using(unique_key="order-42").enqueue(conn, 42)
    conn.commit()
    assert second == first
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(1,)]


def test_a_delayed_job_holds_its_key_on_every_queue_and_keeps_its_time(dsn: str, conn) -> None:
    """As docs/how-to/unique-jobs.md says: a job waiting for its delay holds the key from its
    enqueue; the key is the same on another queue; the waiting job keeps its run_at."""
    _app, charge = make_app(dsn)
    first = charge.using(unique_key="later", delay=3600, queue="slow").enqueue(conn, 1)
    again = charge.using(unique_key="later", queue="fast").enqueue(conn, 2)
    conn.commit()
    assert again == first
    assert query(
        dsn, "SELECT queue, args, run_at > now() + interval '59 minutes' FROM pgqueue.jobs"
    ) == [("slow", [1], True)]


def test_duplicate_in_the_same_transaction_returns_the_same_id(dsn: str, conn) -> None:
    """A transaction sees its own uncommitted job holding the key."""
    _app, charge = make_app(dsn)
    unique = charge.using(unique_key="order-7")
    assert unique.enqueue(conn, 7) == unique.enqueue(conn, 7)
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(1,)]


def test_on_conflict_raise_reports_the_existing_job_and_keeps_the_transaction(
    dsn: str, conn
) -> None:
    """on_conflict='raise' raises DuplicateJob with the holder's id; the transaction goes on."""
    _app, charge = make_app(dsn)
    first = charge.using(unique_key="order-1").enqueue(conn, 1)
    with pytest.raises(pgqueue.DuplicateJob, match="order-1") as caught:
        charge.using(unique_key="order-1", on_conflict="raise").enqueue(conn, 1)
    assert caught.value.job_id == first
    other = charge.enqueue(conn, 2)  # the transaction is still usable
    conn.commit()
    assert {r[0] for r in query(dsn, "SELECT id FROM pgqueue.jobs")} == {first, other}


def test_app_using_accepts_unique_key_and_on_conflict(dsn: str, conn) -> None:
    """Producers that only know a task's name get the same behaviour."""
    app, _charge = make_app(dsn)
    first = app.using("charge", unique_key="k").enqueue(conn, 1)
    with pytest.raises(pgqueue.DuplicateJob):
        app.using("charge", unique_key="k", on_conflict="raise").enqueue(conn, 1)
    assert app.using("charge", unique_key="k").enqueue(conn, 1) == first


def test_bad_on_conflict_is_refused_at_once() -> None:
    """An unknown on_conflict value raises ValueError before any SQL."""
    app = pgqueue.PgQueue()
    with pytest.raises(ValueError, match="on_conflict"):
        app.using("charge", unique_key="k", on_conflict="ignore")


async def test_aenqueue_returns_the_existing_job(dsn: str, aconn) -> None:
    """The async path behaves like the sync one."""
    _app, charge = make_app(dsn)
    first = await charge.using(unique_key="a").aenqueue(aconn, 1)
    await aconn.commit()
    assert await charge.using(unique_key="a").aenqueue(aconn, 1) == first
    with pytest.raises(pgqueue.DuplicateJob):
        await charge.using(unique_key="a", on_conflict="raise").aenqueue(aconn, 1)
    await aconn.commit()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(1,)]


async def test_key_is_free_again_once_the_job_finished(dsn: str, conn) -> None:
    """After the job succeeds (moved to history), the same key creates a new job."""
    app, charge = make_app(dsn)
    first = charge.using(unique_key="order-9").enqueue(conn, 9)
    conn.commit()
    worker = app.worker(poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 1)
    second = charge.using(unique_key="order-9").enqueue(conn, 9)
    conn.commit()
    assert second != first
    assert states(dsn) == {"succeeded": 1, "queued": 1}


def enqueue_in_own_transaction(dsn: str, key: str, barrier: threading.Barrier) -> int:
    """Open a connection, wait for the others, enqueue ``key``, commit; returns the id."""
    _app, charge = make_app(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")  # the transaction is open before the race starts
        barrier.wait(timeout=30)
        job_id = charge.using(unique_key=key).enqueue(conn, 1)
        conn.commit()
        return job_id


def test_twenty_concurrent_transactions_make_exactly_one_job(dsn: str) -> None:
    """20 transactions racing on one key: one job, every transaction commits, all get its id."""
    barrier = threading.Barrier(20)
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(enqueue_in_own_transaction, dsn, "race", barrier) for _ in range(20)]
        ids = [f.result(timeout=60) for f in futures]  # re-raises any failed transaction
    assert query(dsn, "SELECT id FROM pgqueue.jobs") == [(ids[0],)]
    assert set(ids) == {ids[0]}


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``condition`` every 20 ms until true, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        time.sleep(0.02)


def blocked_on_a_lock(dsn: str) -> bool:
    """Whether some backend of this database waits for a lock."""
    rows = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'",
    )
    return rows[0][0] > 0


def test_waiting_enqueue_wins_when_the_holder_rolls_back(dsn: str) -> None:
    """An enqueue waiting on an uncommitted holder inserts its own job if the holder rolls back."""
    _app, charge = make_app(dsn)
    result: dict[str, Any] = {}
    with psycopg.connect(dsn) as holder:
        charge.using(unique_key="k").enqueue(holder, 1)

        def second() -> None:
            with psycopg.connect(dsn) as conn:
                result["id"] = charge.using(unique_key="k").enqueue(conn, 2)
                conn.commit()

        thread = threading.Thread(target=second)
        thread.start()
        wait_until(lambda: blocked_on_a_lock(dsn))
        holder.rollback()
        thread.join(30)
    assert query(dsn, "SELECT id, args FROM pgqueue.jobs") == [(result["id"], [2])]


def test_waiting_enqueue_returns_the_holder_when_it_commits(dsn: str) -> None:
    """An enqueue waiting on an uncommitted holder returns the holder's id once it commits."""
    _app, charge = make_app(dsn)
    result: dict[str, Any] = {}
    with psycopg.connect(dsn) as holder:
        holder_id = charge.using(unique_key="k").enqueue(holder, 1)

        def second() -> None:
            with psycopg.connect(dsn) as conn:
                result["id"] = charge.using(unique_key="k").enqueue(conn, 2)
                conn.commit()

        thread = threading.Thread(target=second)
        thread.start()
        wait_until(lambda: blocked_on_a_lock(dsn))
        holder.commit()
        thread.join(30)
    assert result["id"] == holder_id
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(1,)]


@pytest.mark.parametrize("ending", ["acked", "cancelled"])
@pytest.mark.parametrize("commits", [True, False])
def test_an_enqueue_waiting_for_the_holders_end_gets_a_job_that_exists(
    dsn: str, ending: str, commits: bool
) -> None:
    """The key's holder is being acked (claimed, its success written) or cancelled, not yet
    committed: an enqueue of its key waits. Committed, the key is free and the enqueue inserts
    its own job; rolled back, the holder is still active and the enqueue gets its id (and
    DuplicateJob naming it with on_conflict="raise"). Never an id of a job that is gone."""
    _app, charge = make_app(dsn)
    [(holder_id,)] = query(dsn, "SELECT pgqueue.enqueue('charge', '[1]', unique_key => 'k')")
    with psycopg.connect(dsn) as ender:
        if ending == "acked":
            with psycopg.connect(dsn, autocommit=True) as claimer, claimer.cursor() as cur:
                assert _store.run(cur, _store.jobs_claim("w", {"default": 1}, 30)).rows
            with ender.cursor() as cur:
                _store.run(cur, _store.jobs_ack([Outcome(holder_id, 1, "succeeded")]))
        else:
            ender.execute("SELECT pgqueue.cancel(%s)", [holder_id])
        result: dict[str, Any] = {}

        def second() -> None:
            with psycopg.connect(dsn) as conn:
                result["id"] = charge.using(unique_key="k").enqueue(conn, 2)
                try:
                    charge.using(unique_key="k", on_conflict="raise").enqueue(conn, 3)
                except pgqueue.DuplicateJob as dup:
                    result["dup"] = dup.job_id
                conn.commit()

        thread = threading.Thread(target=second)
        thread.start()
        wait_until(lambda: blocked_on_a_lock(dsn))
        ender.commit() if commits else ender.rollback()
        thread.join(30)
    expected = "succeeded" if ending == "acked" else "cancelled"
    if commits:
        assert result["id"] != holder_id and result["dup"] == result["id"]
        assert query(dsn, "SELECT id, state FROM pgqueue.jobs ORDER BY id") == [
            (holder_id, expected), (result["id"], "queued"),
        ]  # fmt: skip
    else:
        assert result == {"id": holder_id, "dup": holder_id}
        assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(1,)]


async def test_enqueue_many_refuses_a_unique_key_before_any_sql(dsn: str, conn, aconn) -> None:
    """One key cannot cover many jobs: enqueue_many and aenqueue_many refuse a unique_key with
    ValueError before sending anything, and the caller's transactions go on."""
    app, charge = make_app(dsn)
    for task in (charge.using(unique_key="k"), app.using("charge", unique_key="k")):
        with pytest.raises(ValueError, match="enqueue_many cannot share one unique_key"):
            task.enqueue_many(conn, [((1,), {}), ((1,), {})])
        with pytest.raises(ValueError, match="enqueue_many cannot share one unique_key"):
            await task.aenqueue_many(aconn, [((1,), {})])
    assert charge.enqueue_many(conn, [((1,), {}), ((2,), {})])
    conn.commit()
    await aconn.commit()
    assert query(dsn, "SELECT count(*), count(unique_key) FROM pgqueue.jobs") == [(2, 0)]


def key_app(dsn: str) -> pgqueue.PgQueue:
    """An app whose task "later" always raises Retry(3600) and "broken" always fails."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="later")
    async def later() -> None:
        raise pgqueue.Retry(3600)

    @app.task(name="broken", max_attempts=1)
    async def broken() -> None:
        raise ValueError("broken")

    return app


async def test_a_job_waiting_out_a_retry_keeps_its_key_and_one_failed_for_good_frees_it(
    dsn: str, conn
) -> None:
    """Retry() puts the job back to queued for an hour: it still holds its key, so an enqueue
    meanwhile returns it. A job whose last attempt failed is history: its key makes a new job."""
    app = key_app(dsn)
    waiting = app.using("later", unique_key="w").enqueue(conn)
    failing = app.using("broken", unique_key="f").enqueue(conn)
    conn.commit()
    worker = app.worker(poll_interval=0.05)
    await run_worker_until(
        worker, lambda: worker.stats.rescheduled == 1 and states(dsn).get("failed") == 1
    )
    assert app.using("later", unique_key="w").enqueue(conn) == waiting
    again = app.using("broken", unique_key="f").enqueue(conn)
    conn.commit()
    assert again != failing
    assert states(dsn) == {"queued": 2, "failed": 1}


RUNNING_LOST = """
INSERT INTO pgqueue.active_jobs (task, queue, state, attempts, max_attempts, lease_expires_at,
                                 worker_id, unique_key)
VALUES ('later', 'elsewhere', 'running', 1, 2, now() - interval '1 minute', 'gone', 'kept'),
       ('later', 'elsewhere', 'running', 2, 2, now() - interval '1 minute', 'gone', 'freed')
RETURNING id
"""


async def test_a_rescued_job_keeps_its_key_until_its_attempts_are_used_up(dsn: str, conn) -> None:
    """A job whose worker died is rescued back to queued with its key held; one whose last
    attempt it was fails as "worker lost", and its key is free."""
    app = key_app(dsn)
    [(kept,), (freed,)] = query(dsn, RUNNING_LOST)
    worker = app.worker(queues=["default"], poll_interval=0.05, rescue_interval=0.1)
    await run_worker_until(worker, lambda: states(dsn) == {"queued": 1, "failed": 1})
    assert query(dsn, "SELECT id, last_error FROM pgqueue.jobs ORDER BY id") == [
        (kept, "worker lost"), (freed, "worker lost")
    ]  # fmt: skip
    assert app.using("later", queue="elsewhere", unique_key="kept").enqueue(conn) == kept
    assert app.using("later", queue="elsewhere", unique_key="freed").enqueue(conn) != freed
    conn.commit()
    assert states(dsn) == {"queued": 2, "failed": 1}
