"""The SQL contract: pgqueue.enqueue / retry / cancel, the completion notification, the views."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store, admin
from tests.helpers import query, run_worker_until, states

EXAMPLES = Path(__file__).parents[2] / "examples"


def notes(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """The notifications already received on ``conn``."""
    return [(n.channel, n.payload) for n in conn.notifies(timeout=0.5, stop_after=100)]


def finished_job(dsn: str, state: str, attempts: int = 3, task: str = "t") -> int:
    """Insert a finished job directly; returns its id."""
    [(job_id,)] = query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, last_error, finished_at)"
        " VALUES (nextval(pg_get_serial_sequence('pgqueue.active_jobs', 'id')), 'default', %s,"
        " '[]', '{}', %s, 0, %s, 3, now(), now(), 'boom', now() - interval '1 hour')"
        " RETURNING id",
        [task, state, attempts],
    )
    return int(job_id)


def test_sql_enqueue_is_transactional_and_wakes_workers_on_commit(dsn: str) -> None:
    """pgqueue.enqueue inserts in the caller's transaction and notifies only on commit."""
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn) as conn:
        listener.execute("LISTEN pgqueue_jobs")
        [(rolled_back,)] = conn.execute("SELECT pgqueue.enqueue('t', '[1]')").fetchall()
        conn.rollback()
        assert notes(listener) == []
        [(job_id,)] = conn.execute(
            "SELECT pgqueue.enqueue('t', '[1, 2]', '{\"x\": 3}', queue => 'mail', priority => 5)"
        ).fetchall()
        conn.commit()
        assert notes(listener) == [("pgqueue_jobs", "mail")]
    assert query(dsn, "SELECT id, queue, args, kwargs, priority, state FROM pgqueue.jobs") == [
        (job_id, "mail", [1, 2], {"x": 3}, 5, "queued")
    ]
    assert rolled_back != job_id


def test_sql_enqueue_with_a_held_unique_key_returns_the_existing_job(dsn: str) -> None:
    """A second enqueue with an active job's unique_key inserts nothing and returns its id."""
    first = query(dsn, "SELECT pgqueue.enqueue('t', unique_key => 'k')")
    second = query(dsn, "SELECT pgqueue.enqueue('t', unique_key => 'k')")
    assert first == second
    assert states(dsn) == {"queued": 1}


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [("'t', '{}'", psycopg.errors.CheckViolation, "active_jobs_args_check"),
     ("'t', kwargs => '[]'", psycopg.errors.CheckViolation, "active_jobs_kwargs_check"),
     ("'t', queue => 'no spaces'", psycopg.errors.CheckViolation, "active_jobs_queue_check"),
     ("''", psycopg.errors.CheckViolation, "active_jobs_task_check"),
     ("'t', unique_key => ''", psycopg.errors.CheckViolation, "active_jobs_unique_key_check"),
     ("NULL", psycopg.errors.NotNullViolation, "task"),
     ("'t', NULL", psycopg.errors.NotNullViolation, "args"),
     ("'t', max_attempts => NULL", psycopg.errors.NotNullViolation, "max_attempts")],
)  # fmt: skip
def test_sql_enqueue_refuses_bad_arguments_naming_the_check_or_column(
    dsn: str, call: str, error: type[psycopg.Error], names: str
) -> None:
    """Each bad argument the SQL reference lists fails with the check or the column it
    names there; nothing is inserted."""
    statement = "SELECT pgqueue.enqueue(" + call + ")"
    with psycopg.connect(dsn) as conn, pytest.raises(error) as raised:
        conn.execute(statement)  # type: ignore[call-overload]
    assert names in (raised.value.diag.constraint_name, raised.value.diag.column_name)
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


def test_sql_cancel_cancels_queued_flags_running_and_leaves_finished(dsn: str) -> None:
    """cancel: queued → cancelled at once; running → flagged, its worker hinted; finished → kept."""
    [(queued,)] = query(dsn, "SELECT pgqueue.enqueue('t')")
    [(running,)] = query(dsn, "SELECT pgqueue.enqueue('t')")
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'running', attempts = 1, worker_id = 'w1',"
               " lease_expires_at = now() + interval '30 s'"
               " WHERE id = %s", [running])  # fmt: skip
    done = finished_job(dsn, "succeeded", attempts=1)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_cancel")
        assert query(dsn, "SELECT pgqueue.cancel(%s)", [queued]) == [("cancelled",)]
        assert query(dsn, "SELECT pgqueue.cancel(%s)", [running]) == [("requested",)]
        assert notes(listener) == [("pgqueue_cancel", "w1")]
    assert query(dsn, "SELECT pgqueue.cancel(%s)", [done]) == [("already succeeded",)]
    assert query(dsn, "SELECT pgqueue.cancel(424242)") == [(None,)]
    assert query(dsn, "SELECT id, state, cancel_requested FROM pgqueue.jobs ORDER BY id") == [
        (queued, "cancelled", False), (running, "running", True), (done, "succeeded", False),
    ]  # fmt: skip


def test_sql_retry_requeues_with_a_fresh_budget_of_attempts(dsn: str) -> None:
    """retry: a failed job is queued again, attempts kept and max_attempts raised by its budget."""
    failed = finished_job(dsn, "failed", attempts=3)
    succeeded = finished_job(dsn, "succeeded", attempts=1)
    assert query(dsn, "SELECT pgqueue.retry(%s), pgqueue.retry(%s), pgqueue.retry(9999)",
                 [failed, succeeded]) == [(True, False, False)]  # fmt: skip
    assert query(dsn, "SELECT state, attempts, max_attempts, last_error FROM pgqueue.jobs"
                      " WHERE id = %s", [failed]) == [("queued", 3, 6, "boom")]  # fmt: skip


FINISH = (
    "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
    " attempts, max_attempts, run_at, created_at)"
    " SELECT i, 'default', 't', '[]', '{}', 'succeeded', 0, 1, 3, now(), now()"
    " FROM generate_series(%s::bigint, %s) AS i"
)


def finish(dsn: str, first: int, n: int) -> None:
    """Move ``n`` jobs to history in one statement, ids from ``first``."""
    query(dsn, FINISH, [first, first + n - 1])


def test_finished_jobs_notify_their_ids_once_per_statement(dsn: str) -> None:
    """Moving 900 jobs to history in one statement sends 3 notifications listing all ids."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        _store.run(listener.cursor(), _store.listen_finished())
        finish(dsn, 1, 900)
        received = notes(listener)
    assert len(received) == 3
    ids = sorted(int(i) for _, payload in received for i in payload.split(","))
    assert ids == list(range(1, 901))


def test_finished_jobs_notify_only_while_a_waiter_is_registered(dsn: str) -> None:
    """Every notification wakes every listening backend, workers' included: with nobody
    registered as a waiter, moving jobs to history sends none; once one is, it does."""
    with psycopg.connect(dsn, autocommit=True) as bare:
        bare.execute("LISTEN pgqueue_finished")  # listening, but not registered as a waiter
        finish(dsn, 1, 10)
        assert notes(bare) == []
        with psycopg.connect(dsn, autocommit=True) as waiter:
            _store.run(waiter.cursor(), _store.listen_finished())
            finish(dsn, 11, 10)
            assert [p for _, p in notes(waiter)] == [",".join(map(str, range(11, 21)))]
            assert len(notes(bare)) == 1
        finish(dsn, 21, 10)  # the waiter's connection closed: its registration went with it
        assert notes(bare) == []


def test_a_long_transaction_that_finished_jobs_holds_up_no_waiter(dsn: str) -> None:
    """The trigger lets go of its waiter lock at once: a transaction that moved jobs to history
    and stays open (a cancel in a slow request) must not make a new waiter queue behind it."""
    with psycopg.connect(dsn) as slow, psycopg.connect(dsn, autocommit=True) as waiter:
        slow.execute(FINISH, [1, 1])
        waiter.execute("SET lock_timeout = '2s'")  # the old behaviour: lock_timeout error
        _store.run(waiter.cursor(), _store.listen_finished())
        slow.commit()
        finish(dsn, 2, 1)
        assert [p for _, p in notes(waiter)] == ["2"]


def test_queue_stats_counts_states_age_and_rate_per_queue(dsn: str) -> None:
    """queue_stats: per queue counts per state, scheduled ⊂ queued, oldest age, finished/min."""
    query(dsn, "SELECT pgqueue.enqueue('t', queue => 'a', run_at => now() - interval '90 s')")
    query(dsn, "SELECT pgqueue.enqueue('t', queue => 'a', run_at => now() + interval '1 h')")
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
               " attempts, max_attempts, run_at, created_at) SELECT 100 + i, 'b', 't', '[]', '{}',"
               " s, 0, 1, 3, now(), now() FROM unnest(array['succeeded', 'succeeded', 'failed'])"
               " WITH ORDINALITY AS u(s, i)")  # fmt: skip
    rows = query(dsn, "SELECT queue, queued, scheduled, running, succeeded, failed, cancelled,"
                      " oldest_runnable_age >= interval '90 s', finished_per_minute"
                      " FROM pgqueue.queue_stats ORDER BY queue")  # fmt: skip
    assert rows == [("a", 2, 1, 0, 0, 0, 0, True, 0), ("b", 0, 0, 0, 2, 1, 0, None, 0.6)]


def test_workers_view_shows_live_workers_and_their_running_jobs(dsn: str) -> None:
    """workers: a fresh worker with its running count; one silent for 3 heartbeats is hidden."""
    query(dsn, "INSERT INTO pgqueue.worker_processes (id, hostname, pid, queues, version,"
               " heartbeat_s, last_seen_at) VALUES ('live', 'h', 1, '{\"q\": 2}', 'v', 1, now()),"
               " ('gone', 'h', 2, '{}', 'v', 1, now() - interval '5 s')")  # fmt: skip
    query(dsn, "INSERT INTO pgqueue.active_jobs (task, state, attempts, worker_id,"
               " lease_expires_at) VALUES ('t', 'running', 1, 'live', now() + interval '30 s'),"
               " ('t', 'running', 1, 'live', now() + interval '30 s')")  # fmt: skip
    assert query(dsn, "SELECT id, queues, running FROM pgqueue.workers") == [("live", {"q": 2}, 2)]


async def test_docs_example_enqueues_from_a_table_trigger(dsn: str, conn: Any) -> None:
    """examples/enqueue_from_trigger.sql: a committed signup enqueues a job a worker runs."""
    query(dsn, (EXAMPLES / "enqueue_from_trigger.sql").read_text())
    conn.execute("INSERT INTO signups (email) VALUES ('gone@example.com')")
    conn.rollback()
    conn.execute("INSERT INTO signups (email) VALUES ('ada@example.com')")
    conn.commit()
    app = pgqueue.PgQueue(dsn)

    @app.task(name="emails.send_welcome", queue="emails")
    async def send_welcome(email: str) -> str:
        await asyncio.sleep(0)
        return f"welcome sent to {email}"

    worker = app.worker(queues=["emails"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 1})
    assert query(dsn, "SELECT args, result FROM pgqueue.jobs") == [
        (["ada@example.com"], "welcome sent to ada@example.com")
    ]


def test_sql_retry_never_duplicates_a_held_unique_key(dsn: str) -> None:
    """retry refuses (false) while another active job holds the failed job's unique key."""
    failed = finished_job(dsn, "failed")
    query(dsn, "UPDATE pgqueue.finished_jobs SET unique_key = 'k'")
    query(dsn, "SELECT pgqueue.enqueue('t', unique_key => 'k')")
    assert query(dsn, "SELECT pgqueue.retry(%s)", [failed]) == [(False,)]
    assert states(dsn) == {"failed": 1, "queued": 1}


def test_retrying_every_failed_job_survives_one_whose_attempts_sql_set_near_the_limit(
    dsn: str, conn: Any
) -> None:
    """pgqueue.retry summed attempts and max_attempts as integers: one failed job whose
    attempts SQL had set to 2147483646 overflowed it, and admin.retry_failed (`pgqueue jobs
    retry --failed`), which calls it over every failed job in one statement, requeued none.
    Revision 0006 sums them as bigints; the budget stays capped at 1000."""
    ids = [finished_job(dsn, "failed"), finished_job(dsn, "failed", attempts=2**31 - 2)]
    assert admin.retry_failed(conn) == 2
    conn.commit()
    rows = "SELECT id, state, attempts, max_attempts FROM pgqueue.jobs ORDER BY id"
    assert query(dsn, rows) == [(ids[0], "queued", 3, 6), (ids[1], "queued", 2**31 - 2, 1000)]
