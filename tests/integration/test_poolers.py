"""The Python API through a real PgBouncer in transaction mode (tests/fix_pgbouncer.py),
where one client's consecutive transactions reach different server backends."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.acceptance.conftest import wait_for
from tests.fix_pgbouncer import sessions_left
from tests.helpers import query

WAITER_LOCKS = """
SELECT count(*) FROM pg_locks
 WHERE locktype = 'advisory' AND classid = 7403158 AND objsubid = 2
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

VACUUMS = """
SELECT n_dead_tup >= 3000, vacuum_count FROM pg_stat_user_tables
 WHERE relid = 'pgqueue.active_jobs'::regclass
"""


def queued_job(dsn: str, via: str) -> tuple[pgqueue.PgQueue, int]:
    """An app whose DSN goes through the pooler, and a job no worker will run."""
    app = pgqueue.PgQueue(dsn=via)
    nowhere = app.task(name="nowhere", queue="nowhere")(lambda: None)
    with psycopg.connect(dsn) as conn:
        return app, nowhere.enqueue(conn)


def test_wait_sync_polls_through_pgbouncer_until_the_job_finishes(dsn: str, pgbouncer: str) -> None:
    """wait_sync through a transaction-mode pool reads its job again and again, each read on
    whichever backend serves it: it times out, then returns the job once it is cancelled.
    (It let psycopg prepare the read after five: the sixth prepared it on one backend, the
    seventh ran it on another, 'prepared statement "_pg3_0" does not exist'.)"""
    app, job_id = queued_job(dsn, pgbouncer)
    with pytest.raises(TimeoutError):
        app.wait_sync(job_id, timeout=0.5, poll_interval=0.02)
    canceller = threading.Timer(0.5, query, [dsn, "SELECT pgqueue.cancel(%s)", [job_id]])
    canceller.start()
    try:
        assert app.wait_sync(job_id, timeout=30, poll_interval=0.02).state == "cancelled"
    finally:
        canceller.join()


async def test_wait_poll_only_through_pgbouncer_leaves_no_session_state(
    dsn: str, pgbouncer: str
) -> None:
    """wait(listen=False) registers no waiter and LISTENs nowhere: nothing stays on the pool's
    backends once it returns. A waiter's session locks and LISTEN, taken through the pool,
    stayed with a backend every other client then used: every ack notified, for ever."""
    app, job_id = queued_job(dsn, pgbouncer)
    with pytest.raises(TimeoutError):
        await app.wait(job_id, timeout=0.3, poll_interval=0.02, listen=False)
    query(dsn, "SELECT pgqueue.cancel(%s)", [job_id])
    job: Any = app.wait_sync(job_id, timeout=30, poll_interval=0.02, listen=False)
    assert job.state == "cancelled"
    assert query(dsn, WAITER_LOCKS) == [(0,)]
    left = sessions_left(pgbouncer)
    assert len(left) == 2 and all(held == ([], []) for held in left.values()), left


async def test_a_poll_only_worker_maintains_through_pgbouncer(dsn: str, pgbouncer: str) -> None:
    """A poll-only worker's maintenance pass through a transaction-mode pool (rescue, pruning,
    the horizon check, and a VACUUM, which must run outside any transaction block) does its
    work, and leaves nothing in the pool's sessions."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (task) SELECT 't' FROM generate_series(1, 3000)")
    query(dsn, "DELETE FROM pgqueue.active_jobs")
    wait_for(lambda: query(dsn, VACUUMS) == [(True, 0)], what="dead rows counted")
    worker = pgqueue.PgQueue(pgbouncer).worker(listen=False, vacuum_threshold=1000)
    try:
        await worker.maintain()
    finally:
        await worker._close_connections()
    wait_for(lambda: query(dsn, VACUUMS) == [(False, 1)], what="the vacuum recorded")
    assert all(held == ([], []) for held in sessions_left(pgbouncer).values())
