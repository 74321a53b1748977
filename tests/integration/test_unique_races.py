"""Unique keys under concurrency, through the SQL functions: pgqueue.retry and pgqueue.enqueue
keep their contract when another transaction takes or frees the key at the same moment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import admin
from pgqueue._unique import MAX_ROUNDS
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


def test_sql_enqueue_of_a_key_freed_during_the_call_enqueues_the_job(dsn: str) -> None:
    """pgqueue.enqueue with a key whose holder finishes between its insert and its look-up
    returned NULL and inserted nothing: the job was lost. (A test-only trigger holds the call
    between its two statements, where a worker's ack can land.)"""
    [(holder,)] = query(dsn, "SELECT pgqueue.enqueue('t', unique_key => 'report-7')")
    query(dsn, "CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_pause AFTER INSERT ON pgqueue.active_jobs"
               " FOR EACH STATEMENT EXECUTE FUNCTION pause()")  # fmt: skip
    with psycopg.connect(dsn) as gate, psycopg.connect(dsn) as caller:
        gate.execute("SELECT pg_advisory_xact_lock(4242)")
        call = blocked(caller, "SELECT pgqueue.enqueue('t', unique_key => 'report-7')")
        wait_until_blocked(dsn, caller.info.backend_pid)
        # What an ack does: the holder leaves active_jobs for the history.
        query(dsn, "WITH gone AS (DELETE FROM pgqueue.active_jobs WHERE id = %s RETURNING *)"
                   " INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state,"
                   " priority, attempts, max_attempts, run_at, created_at, unique_key)"
                   " SELECT id, queue, task, args, kwargs, 'succeeded', priority, 1,"
                   " max_attempts, run_at, created_at, unique_key FROM gone", [holder])  # fmt: skip
        gate.rollback()
        call["thread"].join(10)
        assert call.get("error") is None, call.get("error")
        [(new_id,)] = call["result"]
        caller.commit()
    assert new_id is not None and new_id != holder
    assert query(dsn, "SELECT id, state FROM pgqueue.active_jobs") == [(new_id, "queued")]


def test_sql_enqueue_of_a_key_that_keeps_changing_hands_gives_up_as_python_does(dsn: str) -> None:
    """Each round that neither inserts nor finds the key's holder tries again, MAX_ROUNDS
    rounds in all (the Python API's bound); then a serialization failure names the key, and
    nothing is left behind. (A test-only trigger drops every insert, as if each round's
    holder finished at that very moment.)"""
    query(dsn, "CREATE SEQUENCE tries")
    query(dsn, "CREATE FUNCTION drop_it() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " PERFORM nextval('tries'); RETURN NULL; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_drop BEFORE INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION drop_it()")  # fmt: skip
    with psycopg.connect(dsn) as caller:
        with pytest.raises(psycopg.errors.SerializationFailure) as raised:
            caller.execute("SELECT pgqueue.enqueue('t', unique_key => 'report-7')")
        caller.rollback()
    assert raised.value.diag.message_primary == (
        f"pgqueue.enqueue: unique key 'report-7' kept changing hands; gave up after"
        f" {MAX_ROUNDS} tries"
    )
    assert query(dsn, "SELECT last_value FROM tries") == [(MAX_ROUNDS,)]
    assert states(dsn) == {}


def test_sql_cancel_of_a_job_retried_during_the_call_finds_it(dsn: str) -> None:
    """pgqueue.cancel looks for the job among the active ones, then in the history: a retry
    committing between the two looks hid it from both, and cancel returned NULL for a job
    that exists. (The retrying transaction keeps the history locked, so that the cancel waits
    between its two looks.)"""
    job_id = failed_job(dsn, "sync-42")
    with psycopg.connect(dsn) as operator, psycopg.connect(dsn) as caller:
        operator.execute("SELECT pgqueue.retry(%s)", [job_id])
        operator.execute("LOCK TABLE pgqueue.finished_jobs IN ACCESS EXCLUSIVE MODE")
        call = blocked(caller, "SELECT pgqueue.cancel(%s)", [job_id])
        wait_until_blocked(dsn, caller.info.backend_pid)
        operator.commit()
        call["thread"].join(10)
        assert call.get("error") is None, call.get("error")
        assert call["result"] == [("cancelled",)]
        caller.commit()
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs") == [(job_id, "cancelled")]


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_python_enqueue_of_a_key_that_keeps_changing_hands_fails_as_sql_does(
    dsn: str, api: str
) -> None:
    """The Python API gave up after MAX_ROUNDS rounds with a plain PgQueueError, where
    pgqueue.enqueue raises serialization_failure (40001): a caller's retry of the transaction
    on 40001 missed it. It now raises UniqueKeyContended, a SerializationFailure too, and the
    caller's transaction is left usable. (A test-only trigger drops every insert.)"""
    query(dsn, "CREATE SEQUENCE tries")
    query(dsn, "CREATE FUNCTION drop_it() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " PERFORM nextval('tries'); RETURN NULL; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_drop BEFORE INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION drop_it()")  # fmt: skip
    app = pgqueue.PgQueue(dsn=dsn)
    task = app.task(name="t")(lambda: None)
    if api == "sync":
        with psycopg.connect(dsn) as caller:
            with pytest.raises(psycopg.errors.SerializationFailure) as raised:
                task.using(unique_key="report-7").enqueue(caller)
            assert caller.execute("SELECT 1").fetchall() == [(1,)]
    else:
        async with await psycopg.AsyncConnection.connect(dsn) as acaller:
            with pytest.raises(psycopg.errors.SerializationFailure) as raised:
                await task.using(unique_key="report-7").aenqueue(acaller)
            assert await (await acaller.execute("SELECT 1")).fetchall() == [(1,)]
    assert isinstance(raised.value, pgqueue.UniqueKeyContended)
    assert isinstance(raised.value, pgqueue.PgQueueError)
    assert raised.value.sqlstate == "40001"
    assert raised.value.unique_key == "report-7"
    assert str(raised.value) == (
        f"unique key 'report-7' kept changing hands; gave up enqueueing after {MAX_ROUNDS} tries"
    )
    assert query(dsn, "SELECT last_value FROM tries") == [(MAX_ROUNDS,)]
