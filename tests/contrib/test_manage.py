"""Reading and retrying single jobs (what the admin and django.tasks results call)."""

from __future__ import annotations

from pgqueue._manage import get_job, retry_jobs
from tests.contrib import testing_tasks as t


def test_retry_requeues_finished_failures_under_the_same_id(conn, dsn: str) -> None:
    """A cancelled job is queued again with its id, attempts kept, and its history kept."""
    job_id = t.add.enqueue(conn, 1, 2)
    t.app.cancel(conn, job_id)
    assert retry_jobs(conn, [job_id]) == [job_id]
    job = get_job(conn, job_id)
    assert job is not None
    assert (job.state, job.attempts, job.args, job.last_error) == (
        "queued", 0, [1, 2], "cancelled on request",
    )  # fmt: skip


def test_retry_leaves_a_job_whose_unique_key_is_taken(conn, dsn: str) -> None:
    """A finished job is not requeued while an active job holds its unique key."""
    first = t.add.using(unique_key="k").enqueue(conn, 1, 1)
    t.app.cancel(conn, first)
    t.add.using(unique_key="k").enqueue(conn, 2, 2)
    assert retry_jobs(conn, [first]) == []
    assert get_job(conn, first).state == "cancelled"  # type: ignore[union-attr]


def test_get_job_of_a_missing_id_is_none(conn) -> None:
    """get_job returns None for an id that is not there."""
    assert get_job(conn, 123456) is None
