"""Reading and retrying single jobs (what the admin and django.tasks results call)."""

from __future__ import annotations

import psycopg

from pgqueue import admin
from pgqueue._manage import get_job, retry_jobs
from tests.contrib import testing_tasks as t
from tests.helpers import states
from tests.integration.test_unique_races import failed_job, in_thread, wait_until_blocked


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


def test_retrying_jobs_given_out_of_order_cannot_deadlock_retry_failed(dsn: str) -> None:
    """The admin's retry (retry_jobs) locked the jobs in the order given, `pgqueue jobs retry
    --failed` locks them in id order: given [b, a], it held b and waited for a, which retry
    --failed held while it waited for b, and one of them died in a deadlock. Now it locks in
    id order too, each id once: it waits behind retry --failed, which requeues both."""
    a, b = failed_job(dsn, "a"), failed_job(dsn, "b")
    with (
        psycopg.connect(dsn) as holder, psycopg.connect(dsn) as operator,
        psycopg.connect(dsn) as admin_user,
    ):  # fmt: skip
        holder.execute("SELECT 1 FROM pgqueue.finished_jobs WHERE id = %s FOR UPDATE", [a])
        every = in_thread(lambda: admin.retry_failed(operator))  # locks a (waits), then b
        wait_until_blocked(dsn, operator.info.backend_pid)
        chosen = in_thread(lambda: retry_jobs(admin_user, [b, a, b]))
        wait_until_blocked(dsn, admin_user.info.backend_pid)
        holder.commit()  # a is free: retry --failed, first in line, takes it
        every["thread"].join(30)
        assert every.get("error") is None, every.get("error")
        operator.commit()
        chosen["thread"].join(30)
        assert chosen.get("error") is None, chosen.get("error")
        admin_user.commit()
    assert every["result"] == 2
    assert chosen["result"] == []  # both requeued already, by retry --failed
    assert states(dsn) == {"queued": 2}
