"""Reading, retrying and cancelling single jobs (what the admin actions call)."""

from __future__ import annotations

from pgqueue._manage import cancel_jobs, get_job, retry_jobs
from tests.contrib import testing_tasks as t
from tests.helpers import query


def _claim(dsn: str, job_id: int) -> None:
    claim = (
        "UPDATE pgqueue.active_jobs SET state = 'running', attempts = 1, "
        "lease_expires_at = now() + interval '1 minute' WHERE id = %s"
    )
    query(dsn, claim, [job_id])


def test_cancel_ends_queued_jobs_and_flags_running_ones(conn, dsn: str) -> None:
    """Queued → cancelled at once; running → cancel_requested (the worker stops it)."""
    waiting, busy = t.add.enqueue(conn, 1, 1), t.add.enqueue(conn, 2, 2)
    conn.commit()
    _claim(dsn, busy)
    assert sorted(cancel_jobs(conn, [waiting, busy, 999])) == sorted([waiting, busy])
    conn.commit()
    assert query(dsn, "SELECT id, state, cancel_requested FROM pgqueue.jobs ORDER BY id") == [
        (waiting, "cancelled", False), (busy, "running", True),
    ]  # fmt: skip


def test_retry_requeues_finished_failures_under_the_same_id(conn, dsn: str) -> None:
    """A cancelled job is queued again with its id, attempts reset, and its history kept."""
    job_id = t.add.enqueue(conn, 1, 2)
    cancel_jobs(conn, [job_id])
    assert retry_jobs(conn, [job_id]) == [job_id]
    job = get_job(conn, job_id)
    assert job is not None
    assert (job.state, job.attempts, job.args, job.last_error) == (
        "queued", 0, [1, 2], "cancelled on request",
    )  # fmt: skip


def test_retry_leaves_a_job_whose_unique_key_is_taken(conn, dsn: str) -> None:
    """A finished job is not requeued while an active job holds its unique key."""
    first = t.add.using(unique_key="k").enqueue(conn, 1, 1)
    cancel_jobs(conn, [first])
    t.add.using(unique_key="k").enqueue(conn, 2, 2)
    assert retry_jobs(conn, [first]) == []
    assert get_job(conn, first).state == "cancelled"  # type: ignore[union-attr]


def test_get_job_of_a_missing_id_is_none(conn) -> None:
    """get_job returns None for an id that is not there."""
    assert get_job(conn, 123456) is None
