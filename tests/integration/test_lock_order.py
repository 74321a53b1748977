"""Statements that lock several job rows lock them in the order of their ids, so that they
cannot deadlock with a session that locks the same jobs in that order (the Django admin's
cancel of a selection, an operator cancelling jobs in one transaction)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._store import Outcome
from tests.helpers import query, wait_blocked
from tests.integration import tasks_app as t

CANCEL = "SELECT pgqueue.cancel(%s)"


def _run(dsn: str, statement: _store.Query[Any]) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        return _store.run(cur, statement)


def _two_running(dsn: str, conn: Any) -> tuple[int, int]:
    """Two jobs claimed by worker 'w' (attempt 1): their ids, the lower first."""
    for _ in range(2):
        t.add.enqueue(conn, 1, 2)
    conn.commit()
    low, high = sorted(row[0] for row in _run(dsn, _store.jobs_claim("w", {"io": 2}, 30)).rows)
    return low, high


def _run_against_cancels(dsn: str, statement: _store.Query[Any], low: int, high: int) -> Any:
    """Run ``statement`` while another session cancels ``low`` then ``high`` in one
    transaction: ``low`` before the statement starts, ``high`` once the statement waits for
    a lock. Returns what the statement returned; raises what either session raised."""
    results: list[Any] = []

    def run(conn: psycopg.Connection[Any]) -> None:
        try:
            with conn.cursor() as cur:
                results.append(_store.run(cur, statement))
        except BaseException as exc:  # handed to the test
            results.append(exc)

    with psycopg.connect(dsn) as admin, psycopg.connect(dsn, autocommit=True) as worker:
        admin.execute(CANCEL, [low])
        thread = threading.Thread(target=run, args=(worker,))
        thread.start()
        try:
            wait_blocked(dsn, worker.info.backend_pid)
            admin.execute(CANCEL, [high])
            admin.commit()
        finally:
            admin.rollback()
            thread.join(60)
    assert not thread.is_alive()
    if isinstance(results[0], BaseException):
        raise results[0]
    return results[0]


def test_an_ack_of_a_retry_and_a_success_waits_for_a_cancel_in_id_order(dsn: str, conn) -> None:
    """A batch that retries one job and ends another locked the retried rows first, then the
    ended ones: retrying the higher id and ending the lower, it held the higher while it
    waited for the lower, which an admin cancelling both in id order held, and the admin's
    cancel of the higher closed the cycle ('deadlock detected', one of the two aborted). The
    ack now locks its rows in id order first: it waits for the lower holding nothing."""
    low, high = _two_running(dsn, conn)
    batch = [Outcome(high, 1, "queued", error="again", delay=0.0), Outcome(low, 1, "succeeded")]
    acked = _run_against_cancels(dsn, _store.jobs_ack(batch), low, high)
    assert acked.ids == [low]  # the cancel of high committed while the ack waited (see _again)
    assert _run(dsn, _store.jobs_ack(batch[:1])).cancelled == [high]
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs ORDER BY id") == [
        (low, "succeeded"),
        (high, "cancelled"),
    ]


def test_an_ack_of_successes_locks_them_in_id_order_whatever_order_they_came_in(
    dsn: str, conn
) -> None:
    """A batch without retries locked its rows in the order its outcomes came (the order the
    jobs ended in): ending the higher id first, it held it while it waited for the lower,
    which an admin cancelling both in id order held, and the admin's cancel of the higher
    closed the cycle. Its outcomes are now sent in id order: it waits for the lower holding
    nothing, and then ends both."""
    low, high = _two_running(dsn, conn)
    batch = [Outcome(high, 1, "succeeded"), Outcome(low, 1, "succeeded")]
    acked = _run_against_cancels(dsn, _store.jobs_ack(batch), low, high)
    assert sorted(acked.ids) == [low, high]
    assert query(dsn, "SELECT state FROM pgqueue.jobs ORDER BY id") == [("succeeded",)] * 2


def test_a_heartbeat_waits_for_a_cancel_in_id_order(dsn: str, conn) -> None:
    """A heartbeat locked its rows in the order of the worker's list: extending the higher id
    first, it held it while it waited for the lower, which an admin cancelling both in id
    order held, and the admin's cancel of the higher closed the cycle. It now locks its rows
    in id order first; both leases are extended, and both jobs read as asked to cancel.
    (Beside a few rows the plan scans the table in its order, the ids' here: 1,000 other
    jobs make it look each job of the list up, as it does in a queue of any size.)"""
    low, high = _two_running(dsn, conn)
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task) SELECT 'other', 'x'"
               " FROM generate_series(1, 1000)")  # fmt: skip
    query(dsn, "ANALYZE pgqueue.active_jobs")
    beat = _run_against_cancels(
        dsn, _store.leases_extend("w", 30, [(high, 1), (low, 1)]), low, high
    )
    assert beat.leases == {(low, 1): True, (high, 1): True}


def test_failing_uncountable_jobs_skips_a_job_another_session_holds(dsn: str, conn) -> None:
    """Two queued jobs whose attempts cannot be counted up; an admin has cancelled the lower
    in a transaction still open. The statement fails the higher and leaves the lower to the
    admin, waiting for nothing. It waited for the admin's lock (for as long as a session
    left open in psql holds it), with the worker's claims and maintenance waiting on it."""
    for _ in range(2):
        t.add.enqueue(conn, 1, 2)
    conn.commit()
    low, high = sorted(row[0] for row in query(dsn, "SELECT id FROM pgqueue.active_jobs"))
    query(dsn, "UPDATE pgqueue.active_jobs SET attempts = 2147483647")
    with psycopg.connect(dsn) as admin, psycopg.connect(dsn, autocommit=True) as worker:
        admin.execute(CANCEL, [low])
        worker.execute("SET lock_timeout = '5s'")
        with worker.cursor() as cur:
            assert _store.run(cur, _store.jobs_fail_uncountable(["io"])) == [high]
        admin.commit()
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs ORDER BY id") == [
        (low, "cancelled"),
        (high, "failed"),
    ]
