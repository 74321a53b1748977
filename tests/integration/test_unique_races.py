"""Unique keys under concurrency, through the SQL functions: pgqueue.retry and pgqueue.enqueue
keep their contract when another transaction takes or frees the key at the same moment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgqueue import admin
from tests.helpers import query, states


def failed_job(dsn: str, key: str) -> int:
    """A failed job holding ``key`` in the history; returns its id."""
    [(job_id,)] = query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, unique_key, last_error)"
        " VALUES (nextval(pg_get_serial_sequence('pgqueue.active_jobs', 'id')), 'default', 't',"
        " '[]', '{}', 'failed', 0, 3, 3, now(), now(), %s, 'boom') RETURNING id",
        [key],
    )
    return int(job_id)


def in_thread(call: Callable[[], Any]) -> dict[str, Any]:
    """Start ``call()`` in a thread; the dict gets its result or its error."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = call()
        except psycopg.Error as exc:
            out["error"] = exc

    out["thread"] = threading.Thread(target=target)
    out["thread"].start()
    return out


def blocked(conn: psycopg.Connection[Any], statement: str, params: Any = None) -> dict[str, Any]:
    """Start ``statement`` on ``conn`` in a thread; the dict gets its rows or its error."""
    return in_thread(lambda: conn.execute(statement, params).fetchall())


def wait_until_blocked(dsn: str, pid: int) -> None:
    """Wait until backend ``pid`` waits for a lock."""
    for _ in range(500):
        if query(dsn, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                 [pid]) == [(True,)]:  # fmt: skip
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


def test_retry_racing_an_enqueue_of_its_key_returns_false(dsn: str) -> None:
    """pgqueue.retry of a failed job whose key an uncommitted enqueue takes meanwhile returns
    false (the key is held), as it does once that enqueue committed; it raised a unique
    violation, which aborted `pgqueue jobs retry --failed` for every failed job."""
    job_id = failed_job(dsn, "sync-42")
    with psycopg.connect(dsn) as producer, psycopg.connect(dsn) as admin:
        producer.execute("SELECT pgqueue.enqueue('t', unique_key => 'sync-42')")
        retry = blocked(admin, "SELECT pgqueue.retry(%s)", [job_id])
        wait_until_blocked(dsn, admin.info.backend_pid)
        producer.commit()
        retry["thread"].join(10)
        assert retry.get("error") is None, retry.get("error")
        assert retry["result"] == [(False,)]
        admin.commit()
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs WHERE id = %s", [job_id]) == [
        (job_id, "failed")
    ]


def test_retrying_every_failed_job_leaves_the_one_whose_key_an_enqueue_takes(dsn: str) -> None:
    """admin.retry_failed (`pgqueue jobs retry --failed`, one statement) requeues the other
    failed jobs and leaves in the history the one whose key an uncommitted enqueue took;
    before 0008 the unique violation made it requeue none."""
    held, free = failed_job(dsn, "sync-42"), failed_job(dsn, "sync-43")
    with psycopg.connect(dsn) as producer, psycopg.connect(dsn) as operator:
        producer.execute("SELECT pgqueue.enqueue('t', unique_key => 'sync-42')")
        retried = in_thread(lambda: admin.retry_failed(operator))
        wait_until_blocked(dsn, operator.info.backend_pid)
        producer.commit()
        retried["thread"].join(10)
        assert retried.get("error") is None, retried.get("error")
        assert retried["result"] == 1
        operator.commit()
    jobs = "SELECT id, state FROM pgqueue.jobs WHERE id IN (%s, %s) ORDER BY id"
    assert query(dsn, jobs, [held, free]) == [(held, "failed"), (free, "queued")]


def test_retry_racing_an_enqueue_that_rolls_back_requeues_the_job(dsn: str) -> None:
    """The enqueue that took the key rolls back: the retry waited for it and requeues the job,
    under its id, out of the history."""
    job_id = failed_job(dsn, "sync-42")
    with psycopg.connect(dsn) as producer, psycopg.connect(dsn) as operator:
        producer.execute("SELECT pgqueue.enqueue('t', unique_key => 'sync-42')")
        retry = blocked(operator, "SELECT pgqueue.retry(%s)", [job_id])
        wait_until_blocked(dsn, operator.info.backend_pid)
        producer.rollback()
        retry["thread"].join(10)
        assert retry.get("error") is None, retry.get("error")
        assert retry["result"] == [(True,)]
        operator.commit()
    assert query(dsn, "SELECT id, state FROM pgqueue.active_jobs") == [(job_id, "queued")]
    assert query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs") == [(0,)]


def test_two_retries_of_one_job_requeue_it_once(dsn: str) -> None:
    """The second retry waits for the first (the history row is locked) and, once it
    committed, finds nothing to retry: false, and the job is queued once."""
    job_id = failed_job(dsn, "sync-42")
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        assert first.execute("SELECT pgqueue.retry(%s)", [job_id]).fetchall() == [(True,)]
        retry = blocked(second, "SELECT pgqueue.retry(%s)", [job_id])
        wait_until_blocked(dsn, second.info.backend_pid)
        first.commit()
        retry["thread"].join(10)
        assert retry.get("error") is None, retry.get("error")
        assert retry["result"] == [(False,)]
        second.commit()
    assert states(dsn) == {"queued": 1}
