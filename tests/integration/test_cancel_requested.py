"""A cancel requested while a job runs is kept when its attempt ends without an outcome that
finishes it: a retry, a snooze, a release at shutdown. The job must not run again."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TypeVar

import psycopg

from pgqueue import _store
from pgqueue._store import Outcome
from pgqueue._worker._acker import Acker
from pgqueue._worker._db import Db
from tests.helpers import query
from tests.integration import tasks_app as t

T = TypeVar("T")


def run(dsn: str, q: _store.Query[T]) -> T:
    """Run one store query in its own autocommit connection."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        return _store.run(cur, q)


def _claimed_and_cancel_requested(dsn: str, conn: psycopg.Connection) -> int:
    """A job of queue io, claimed (attempt 1) and then asked to cancel."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    assert [r[0] for r in run(dsn, _store.jobs_claim("w", {"io": 1}, 30)).rows] == [job_id]
    assert t.app.cancel(conn, job_id) == "requested"
    conn.commit()
    return job_id


def test_a_failed_attempt_of_a_job_asked_to_cancel_ends_it_cancelled(dsn: str, conn) -> None:
    """The task failed before a heartbeat told its worker of the cancel: the retry the worker
    asks for ends the job cancelled instead of queueing it for another run."""
    job_id = _claimed_and_cancel_requested(dsn, conn)
    outcome = Outcome(job_id, 1, "queued", error="boom", traceback="tb", delay=0.0)
    assert run(dsn, _store.jobs_ack([outcome])) == ([job_id], [job_id], [1])
    assert run(dsn, _store.jobs_claim("w2", {"io": 1}, 30)).rows == []
    ended = "SELECT state, attempts, last_error, errors->-1->>'error' FROM pgqueue.jobs"
    assert query(dsn, ended) == [("cancelled", 1, "cancelled on request", "boom")]


def test_a_snooze_of_a_job_asked_to_cancel_ends_it_cancelled(dsn: str, conn) -> None:
    """A Retry without an error (a snooze) gives the attempt back; asked to cancel, the job
    ends cancelled with that attempt uncounted."""
    job_id = _claimed_and_cancel_requested(dsn, conn)
    snooze = Outcome(job_id, 1, "queued", delay=60.0)
    assert run(dsn, _store.jobs_ack([snooze])) == ([job_id], [job_id], [1])
    assert query(dsn, "SELECT state, attempts, last_error, errors FROM pgqueue.jobs") == [
        ("cancelled", 0, "cancelled on request", [])
    ]


def test_a_retry_in_the_same_batch_as_a_cancel_requested_one_is_queued(dsn: str, conn) -> None:
    """Only the job asked to cancel ends: the other retry of the batch is queued as before."""
    job_id = _claimed_and_cancel_requested(dsn, conn)
    other = t.add.enqueue(conn, 3, 4)
    conn.commit()
    run(dsn, _store.jobs_claim("w", {"io": 1}, 30))
    outcomes = [Outcome(job_id, 1, "queued", error="boom"), Outcome(other, 1, "queued", error="x")]
    acked = run(dsn, _store.jobs_ack(outcomes))
    assert sorted(acked.ids) == sorted([job_id, other]) and acked.cancelled == [job_id]
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs ORDER BY id") == [
        (job_id, "cancelled"), (other, "queued"),
    ]  # fmt: skip


def test_a_job_released_at_shutdown_after_a_cancel_request_ends_cancelled(dsn: str, conn) -> None:
    """A worker stopping puts its unfinished jobs back in their queues; one asked to cancel
    ends cancelled instead of running again on another worker."""
    job_id = _claimed_and_cancel_requested(dsn, conn)
    assert run(dsn, _store.leases_release([(job_id, 1)])) == (0, [job_id])  # ended instead
    assert run(dsn, _store.jobs_claim("w2", {"io": 1}, 30)).rows == []
    assert query(dsn, "SELECT state, attempts, last_error FROM pgqueue.jobs") == [
        ("cancelled", 0, "cancelled on request")
    ]


async def test_a_retry_acked_while_a_cancel_commits_ends_the_job_cancelled(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A cancel that commits while the ack statement runs: that statement's snapshot predates
    the cancel, and the row it locks is flagged, so it neither retries nor ends the job, which
    stayed running until its lease expired. The acker writes such an outcome once more, and
    the new statement ends the job cancelled, the attempt's error kept."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    assert [r[0] for r in run(dsn, _store.jobs_claim("w", {"io": 1}, 30)).rows] == [job_id]
    db = Db(dsn, "ack")
    acker = Acker(db, batch=100, interval=0.01, worker="w")
    with psycopg.connect(dsn) as canceller:
        assert canceller.execute("SELECT pgqueue.cancel(%s)", [job_id]).fetchone() == (
            "requested",
        )  # not committed yet: it holds the row
        acker.add(Outcome(job_id, 1, "queued", error="boom", traceback="tb"))
        flushing = asyncio.create_task(acker.flush())
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgqueue ack'"
        while query(dsn, waiting + " AND wait_event_type = 'Lock'") != [(1,)]:
            await asyncio.sleep(0.01)
        canceller.commit()
        await asyncio.wait_for(flushing, 10)
    await db.close()
    ended = "SELECT state, attempts, last_error, errors->-1->>'error' FROM pgqueue.jobs"
    assert query(dsn, ended) == [("cancelled", 1, "cancelled on request", "boom")]


def test_a_release_at_shutdown_while_a_cancel_commits_ends_the_job_cancelled(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A cancel that commits while the release statement runs: that statement's snapshot
    predates the cancel, and the row it locks is flagged, so it neither put the job back nor
    ended it. The worker then left, and the job stayed running until its lease expired, to end
    as a lost worker's: attempt counted, "worker lost" recorded. It now ends cancelled at once,
    as a release of a job asked to cancel does."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    assert [r[0] for r in run(dsn, _store.jobs_claim("w", {"io": 1}, 30)).rows] == [job_id]
    with psycopg.connect(dsn) as canceller, psycopg.connect(dsn, autocommit=True) as worker:
        assert canceller.execute("SELECT pgqueue.cancel(%s)", [job_id]).fetchone() == (
            "requested",
        )  # not committed yet: it holds the row
        released: list[int] = []
        query_ = _store.leases_release([(job_id, 1)])
        release = threading.Thread(
            target=lambda: released.append(_store.run(worker.cursor(), query_))
        )
        release.start()
        waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
        for _ in range(1000):
            if query(dsn, waiting, [worker.info.backend_pid]) == [(True,)]:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the release never waited for the cancel's row lock")
        canceller.commit()
        release.join(10)
    assert released == [(0, [job_id])]  # none put back: ended cancelled
    assert query(dsn, "SELECT state, attempts, last_error, errors FROM pgqueue.jobs") == [
        ("cancelled", 0, "cancelled on request", [])
    ]


def test_an_attempt_that_ends_before_the_cancel_reaches_it_decides(dsn: str, conn) -> None:
    """Asked to cancel, a job whose attempt succeeds (or fails for good) before its worker's
    next heartbeat ends as that attempt says, result kept: one outcome, never two."""
    job_id = _claimed_and_cancel_requested(dsn, conn)
    other = t.add.enqueue(conn, 3, 4)
    conn.commit()
    run(dsn, _store.jobs_claim("w", {"io": 1}, 30))
    assert t.app.cancel(conn, other) == "requested"
    conn.commit()
    done = [Outcome(job_id, 1, "succeeded", result="3"), Outcome(other, 1, "failed", error="x")]
    assert run(dsn, _store.jobs_ack(done)).cancelled == []
    assert query(dsn, "SELECT id, state, attempts, result FROM pgqueue.jobs ORDER BY id") == [
        (job_id, "succeeded", 1, 3), (other, "failed", 1, None),
    ]  # fmt: skip
    assert t.app.cancel(conn, job_id) is None
