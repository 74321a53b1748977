"""Rows that pass every check of pgqueue's tables, written by SQL with values pgqueue never
writes: the job or row they belong to is the only thing that suffers, and says why."""

from __future__ import annotations

from pgqueue import _store
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t

ADD = "tests.integration.tasks_app.add"


async def test_a_job_whose_attempts_cannot_be_counted_up_fails_and_its_queue_runs(
    dsn: str, conn
) -> None:
    """A queued job with attempts = 2147483647 (an INSERT or UPDATE may write it: the check
    only asks attempts >= 0). Every claim that reached it failed on the claim's attempts + 1
    ("integer out of range"), so its whole queue stopped, and every worker retried the same
    failing claim for ever. Now that job fails, its error naming the column, and the rest run."""
    [(bad,)] = query(
        dsn, "INSERT INTO pgqueue.active_jobs (task, queue, args, attempts)"
             " VALUES (%s, 'io', '[1, 2]', 2147483647) RETURNING id", [ADD],
    )  # fmt: skip
    fine = [t.add.enqueue(conn, i, 1) for i in range(5)]
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 5, "failed": 1}, 20)
    [(state, error, errors)] = query(
        dsn, "SELECT state, last_error, errors FROM pgqueue.jobs WHERE id = %s", [bad]
    )
    assert state == "failed"
    assert error == _store.UNCOUNTABLE_ERROR and "attempts" in error
    assert [e["error"] for e in errors] == [error]
    results = dict(query(dsn, "SELECT id, result FROM pgqueue.jobs WHERE state = 'succeeded'"))
    assert [results[i] for i in fine] == [1, 2, 3, 4, 5]


# (column, value) pairs psycopg cannot load into a datetime in some or every time zone.
