"""Scenario 8: one bad row never wedges the rescue of the others."""

from __future__ import annotations

import psycopg

from tests.helpers import query
from tests.integration import tasks_app as t

EXPIRED = """
INSERT INTO pgqueue.active_jobs (task, queue, state, attempts, max_attempts, lease_expires_at,
                                 worker_id, unique_key, cancel_requested)
SELECT 'tests.integration.tasks_app.add', 'io', 'running', a, 3, now() - interval '1 minute',
       'gone', k, c
  FROM (VALUES (1, NULL, false), (3, NULL, false), (1, NULL, true), (1, 'key-1', false))
       AS v(a, k, c), generate_series(1, %s)
 WHERE k IS NULL OR generate_series = 1
"""


async def test_rescue_survives_a_history_conflict_and_a_locked_row(dsn: str) -> None:
    """A row already in history and a row locked by a stuck session do not stop the sweep.

    The conflicting row leaves active_jobs and its existing history row stands (ON CONFLICT).
    """
    query(dsn, EXPIRED, [25])
    pick = "SELECT min(id) FROM pgqueue.active_jobs WHERE attempts = %s AND NOT cancel_requested"
    [(conflicting,)] = query(dsn, pick, [3])  # out of attempts: would move to history
    [(locked,)] = query(dsn, pick, [1])  # has attempts left: would go back to queued
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, "
               "priority, attempts, max_attempts, run_at, created_at) SELECT id, queue, task, "
               "args, kwargs, 'succeeded', priority, attempts, max_attempts, run_at, created_at "
               "FROM pgqueue.active_jobs WHERE id = %s", [conflicting])  # fmt: skip
    worker = t.app.worker(dsn=dsn, queues=["io"])
    with psycopg.connect(dsn) as stuck:
        stuck.execute("SELECT 1 FROM pgqueue.active_jobs WHERE id = %s FOR UPDATE", [locked])
        await worker.maintain()
        await worker._close_connections()
        stuck.rollback()
    still_running = [i for (i,) in query(
        dsn, "SELECT id FROM pgqueue.active_jobs WHERE state = 'running'")]  # fmt: skip
    assert still_running == [locked]
    assert dict(query(dsn, "SELECT state, count(*) FROM pgqueue.jobs WHERE id <> %s "
                           "GROUP BY state", [locked])) == {
        "queued": 25 + 1 - 1,  # attempts left (the keyed one too), minus the locked row
        "failed": 25 - 1,  # out of attempts: "worker lost", minus the conflicting row
        "cancelled": 25,  # a cancel was requested
        "succeeded": 1,  # the row already in history keeps its history
    }  # fmt: skip


async def test_the_rescue_of_a_job_asked_to_cancel_ends_it_cancelled_on_request(
    dsn: str,
) -> None:
    """A job asked to cancel while it ran, whose worker was then lost, ends as its ack would
    have ended it: cancelled, 'cancelled on request', and not as 'worker lost' (which its
    errors keep, for the attempt lost). It said 'worker lost', as if it had failed."""
    query(dsn, EXPIRED, [1])
    worker = t.app.worker(dsn=dsn, queues=["io"])
    await worker.maintain()
    await worker._close_connections()
    ended = "SELECT state, attempts, last_error, errors->-1->>'error' FROM pgqueue.jobs"
    assert query(dsn, ended + " WHERE state = 'cancelled'") == [
        ("cancelled", 1, "cancelled on request", "worker lost")
    ]
