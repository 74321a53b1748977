"""The Python operations API: get_job, list, retry, cancel, prune, wait, retention."""

from __future__ import annotations

import asyncio
import math
import re
import threading
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from pgqueue import _ops, _store, admin
from tests.helpers import query, run_worker_until, states
from tests.integration.test_hot_path_plans import plan_nodes, scans_of

fast = pgqueue.RetryPolicy(base=0.01, cap=0.02)


def make_app(dsn: str, **options: Any) -> pgqueue.PgQueue:
    """An app with an adding task and an always-failing one, on queue "q"."""
    app = pgqueue.PgQueue(dsn, retry=fast, **options)

    @app.task(name="add", queue="q")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="boom", queue="q", max_attempts=2)
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


def worker(app: pgqueue.PgQueue, **options: Any) -> pgqueue.Worker:
    """A fast-polling worker of queue "q"."""
    return app.worker(queues=["q"], poll_interval=0.05, **options)


async def test_get_job_returns_a_typed_job_with_result_and_errors(dsn: str, conn: Any) -> None:
    """get_job: state, result, attempts, errors with tracebacks, timestamps; None if unknown."""
    app = make_app(dsn)
    ok = app.using("add").enqueue(conn, 2, 3)
    bad = app.using("boom").enqueue(conn)
    conn.commit()
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 1, "failed": 1})
    done, failed = app.get_job(conn, ok), app.get_job(conn, bad)
    assert isinstance(done, pgqueue.Job) and isinstance(failed, pgqueue.Job)
    assert (done.state, done.result, done.attempts, done.is_finished) == ("succeeded", 5, 1, True)
    assert done.finished_at is not None and done.started_at is not None
    assert failed.state == "failed" and failed.result is None
    assert [e["attempt"] for e in failed.errors] == [1, 2]
    assert "RuntimeError: boom" in failed.errors[-1]["traceback"]
    assert app.get_job(conn, 999_999) is None


async def test_aget_job_reads_on_an_async_connection(dsn: str, aconn: Any) -> None:
    """aget_job is the async twin of get_job."""
    app = make_app(dsn)
    job_id = await app.using("add").aenqueue(aconn, 1, 1)
    job = await app.aget_job(aconn, job_id)
    assert job is not None and (job.state, job.args) == ("queued", [1, 1])


def test_list_jobs_filters_by_state_queue_and_task_newest_first(dsn: str, conn: Any) -> None:
    """list_jobs applies every filter given and returns the newest first, up to limit."""
    app = make_app(dsn)
    ids = [app.using("add", queue=q).enqueue(conn, 1, 2) for q in ("q", "q", "other")]
    app.using("boom").enqueue(conn)
    conn.commit()
    assert [j.id for j in _ops.list_jobs(conn, task="add", queue="q")] == ids[1::-1]
    assert [j.id for j in _ops.list_jobs(conn, task="add", limit=1)] == [ids[2]]
    assert _ops.list_jobs(conn, state="failed") == []
    with pytest.raises(ValueError, match="unknown state"):
        _ops.list_jobs(conn, state="done")


async def test_retry_and_cancel_steer_jobs_and_refuse_wrong_states(dsn: str, conn: Any) -> None:
    """retry requeues a failed job; cancel cancels a queued one; wrong states raise."""
    app = make_app(dsn)
    bad = app.using("boom").enqueue(conn)
    conn.commit()
    await run_worker_until(worker(app), lambda: states(dsn) == {"failed": 1})
    app.retry(conn, bad)
    assert admin.cancel_job(conn, bad) == "cancelled"
    conn.commit()
    job = app.get_job(conn, bad)
    assert job is not None and (job.state, job.max_attempts) == ("cancelled", 4)
    with pytest.raises(pgqueue.JobStateError, match="already finished"):
        admin.cancel_job(conn, bad)
    with pytest.raises(pgqueue.JobStateError, match="there is no job"):
        app.retry(conn, 123_456)


async def test_retry_failed_requeues_only_failed_jobs_of_the_task(dsn: str, conn: Any) -> None:
    """retry_failed(task=...) requeues failed jobs of that task only and says how many."""
    app = make_app(dsn)
    for _ in range(3):
        app.using("boom").enqueue(conn)
    conn.commit()
    await run_worker_until(worker(app), lambda: states(dsn) == {"failed": 3})
    assert _ops.retry_failed(conn, task="other") == 0
    assert _ops.retry_failed(conn, task="boom") == 3
    conn.commit()
    assert states(dsn) == {"queued": 3}


def _finished_jobs_of_ages(dsn: str) -> None:
    """Jobs 101 (succeeded), 103 (failed), 104 (cancelled) finished 2 h ago, 102 (succeeded)
    a minute ago; ids past the sequence's: since revision 0010 a job cannot take a finished
    job's id."""
    query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, finished_at)"
        " SELECT i, 'q', 't', '[]', '{}', s, 0, 1, 3, now(), now(), now() - age"
        " FROM (VALUES (101, 'succeeded', interval '2 h'), (102, 'succeeded', interval '1 min'),"
        " (103, 'failed', interval '2 h'), (104, 'cancelled', interval '2 h')) AS v(i, s, age)",
    )


def test_prune_deletes_only_old_finished_jobs_of_the_states_given(dsn: str, conn: Any) -> None:
    """prune: finished jobs older than the age, of the given states; active jobs never."""
    _finished_jobs_of_ages(dsn)
    query(dsn, "SELECT pgqueue.enqueue('t', run_at => now() - interval '3 h')")  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as auto:
        assert _ops.prune(auto, 3600, states=["succeeded", "failed"], batch=1) == 2
    assert query(dsn, "SELECT id FROM pgqueue.finished_jobs ORDER BY id") == [(102,), (104,)]
    assert states(dsn)["queued"] == 1


def test_count_prunable_counts_what_a_prune_would_delete_and_deletes_nothing(
    dsn: str, conn: Any
) -> None:
    """count_prunable: per state asked for, the finished jobs older than its age, as
    prune_by_state would delete them now; nothing is deleted, and bad ages are refused."""
    _finished_jobs_of_ages(dsn)
    ages = {"succeeded": 3600.0, "failed": 3600.0}
    assert admin.count_prunable(conn, ages) == {"succeeded": 1, "failed": 1}
    assert admin.count_prunable(conn, {"cancelled": 0}) == {"cancelled": 1}
    assert admin.count_prunable(conn, {}) == {}
    with pytest.raises(ValueError, match="only finished jobs are pruned, not queued"):
        admin.count_prunable(conn, {"queued": 0})
    with pytest.raises(ValueError, match="from 0 to 1000 years"):
        admin.count_prunable(conn, {"failed": -1})
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # not committed
    with psycopg.connect(dsn, autocommit=True) as auto:
        assert _ops.prune_by_state(auto, ages) == 2
    assert admin.count_prunable(conn, ages) == {"succeeded": 0, "failed": 0}


def test_count_retryable_counts_what_retry_failed_would_requeue_and_requeues_nothing(
    dsn: str, conn: Any
) -> None:
    """count_retryable: the failed jobs (of a task) retry_failed would requeue now, so not a
    job whose unique key a queued job holds, and one per key shared; nothing is requeued."""
    query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, finished_at, unique_key)"
        " SELECT i, 'q', t, '[]', '{}', s, 0, 1, 1, now(), now(), now(), k"
        " FROM (VALUES (201, 't', 'failed', NULL), (202, 't', 'failed', 'k1'),"
        " (203, 't', 'failed', 'k1'), (204, 't', 'failed', 'held'), (205, 'u', 'failed', NULL),"
        " (206, 't', 'cancelled', NULL)) AS v(i, t, s, k)",
    )
    query(dsn, "SELECT pgqueue.enqueue('t', unique_key => 'held')")
    assert admin.count_retryable(conn, "t") == 2
    assert admin.count_retryable(conn) == 3
    assert admin.count_retryable(conn, "none") == 0
    with pytest.raises(ValueError, match="task name"):
        admin.count_retryable(conn, "")
    assert query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs WHERE state = 'failed'") == [(5,)]
    with psycopg.connect(dsn, autocommit=True) as auto:
        assert _ops.retry_failed(auto) == 3


def test_prune_ends_though_jobs_reach_the_age_while_it_runs(dsn: str) -> None:
    """prune on an autocommit connection (`pgqueue prune`) deleted batches until one found
    nothing, each measuring the age from its own now(): while workers finished jobs, jobs kept
    reaching the age between two batches, and on a busy queue it never ended. It now deletes
    the jobs older than the age when it started. (A test-only trigger stands for the workers:
    each batch's statement records a job that reaches the age as the next batch starts.)"""
    query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, finished_at)"
        " VALUES (1, 'q', 't', '[]', '{}', 'succeeded', 0, 1, 3, now(), now(),"
        " now() - interval '2 h')",
    )
    query(dsn, "CREATE SEQUENCE aged")
    query(dsn, "CREATE FUNCTION age_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state,"
               " priority, attempts, max_attempts, run_at, created_at, finished_at)"
               " SELECT 1000 + n, 'q', 't', '[]', '{}', 'succeeded', 0, 1, 3, now(), now(),"
               " now() - interval '1 h' FROM nextval('aged') AS n WHERE n <= 100;"
               " RETURN NULL; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_age AFTER DELETE ON pgqueue.finished_jobs"
               " FOR EACH STATEMENT EXECUTE FUNCTION age_one()")  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as auto:
        assert admin.prune(auto, 3600) == 1
    assert query(dsn, "SELECT min(id) > 1000 FROM pgqueue.finished_jobs") == [(True,)]


@pytest.mark.parametrize(
    "options", ["-c datestyle=SQL,DMY -c timezone=Asia/Kolkata", "-c datestyle=German,DMY"
                " -c timezone=America/Los_Angeles", "-c datestyle=Postgres,MDY"],
)  # fmt: skip
def test_prune_in_a_session_whose_datestyle_is_not_iso(dsn: str, options: str) -> None:
    """A database, role or connection may show timestamps in another DateStyle, which psycopg
    cannot read: prune read the database's clock into Python, to send it back with each batch,
    and raised NotImplementedError ("can't parse timestamptz with DateStyle 'SQL, DMY'"). It
    now prunes there as elsewhere, the age counted from the right instant in any time zone."""
    query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, finished_at)"
        " SELECT i, 'q', 't', '[]', '{}', 'succeeded', 0, 1, 3, now(), now(), now() - age"
        " FROM (VALUES (1, interval '2 h'), (2, interval '50 min')) AS v(i, age)",
    )
    with psycopg.connect(dsn, autocommit=True, options=options) as auto:
        assert admin.prune(auto, 3600) == 1
    assert query(dsn, "SELECT id FROM pgqueue.finished_jobs") == [(2,)]


def test_a_prune_reads_on_past_a_batch_that_ended_before_the_common_era(dsn: str) -> None:
    """The last finished_at of a batch went back to the next as text without its era: one in
    44 BC read as AD 44, and the next batch began there, leaving every job finished between
    (SQL can write such times to the history) for a later prune. (1,500 jobs in 44 BC, 500
    in AD 10; batches of 1,000: the first prune deleted 1,000 of the 2,000.)"""
    query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, finished_at)"
        " SELECT i, 'q', 't', '[]', '{}', 'failed', 0, 1, 3, now(), now(),"
        " CASE WHEN i <= 1500 THEN timestamptz '0044-03-15 00:00+00 BC' + i * interval '1 s'"
        " ELSE timestamptz '0010-01-01 00:00+00' END FROM generate_series(1, 2000) AS i",
    )
    with psycopg.connect(dsn, autocommit=True) as auto:
        assert _ops.prune(auto, 3600, ["failed"], batch=1000) == 2000
    assert states(dsn) == {}


def test_each_batch_of_a_prune_reads_on_from_where_the_one_before_ended(dsn: str) -> None:
    """Each batch of a prune read the (state, finished_at) index from its oldest entry, and
    stepped over the entries of every job the batches before it had deleted: by the end of a
    prune of 1.9 million jobs each batch read 10,000 index pages to delete 27 rows, and the
    prune took 40 s where one of 500,000 took 4.6 s. Each batch now reads on from the last
    finished_at the one before it deleted, a few index pages per batch. (One transaction, so
    that the index pages it read can be counted in it: pg_stat_get_xact_blocks_fetched.)"""
    query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, finished_at)"
        " SELECT i, 'q', 't', '[]', '{}', 'succeeded', 0, 1, 3, now(), now(),"
        " now() - interval '2 h' - i * interval '1 ms' FROM generate_series(1, 20000) AS i",
    )
    with psycopg.connect(dsn) as conn:
        assert _ops.prune(conn, 3600, ["succeeded"], batch=100) == 20000
        [(read,)] = conn.execute(
            "SELECT pg_stat_get_xact_blocks_fetched("
            "'pgqueue.finished_jobs_state_finished_idx'::regclass)"
        )
    assert read < 201 * 10, f"{read} index pages read by 201 batches"


def backlog_behind_three_running(dsn: str) -> None:
    """100,000 queued jobs, newer than three that worker "w" runs (ids 1-3); ANALYZE."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task) SELECT 'q', 't'"
               " FROM generate_series(1, 100000)")  # fmt: skip
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'running', worker_id = 'w', attempts = 1,"
               " lease_expires_at = now() + interval '1 min' WHERE id <= 3")  # fmt: skip
    query(dsn, "ANALYZE pgqueue.active_jobs")


def test_live_workers_read_their_running_jobs_without_a_scan_of_the_queue(dsn: str) -> None:
    """`pgqueue workers` and `healthcheck --worker` counted each worker's running jobs with a
    scan of the whole of active_jobs: behind a backlog of 3.4 million queued jobs the health
    check took 3.9 s of its 4 s statement timeout, and a bigger backlog failed the probe of a
    live worker, restarting it when it was needed most. The count reads the running rows'
    partial index (lease_idx) now, and is still right."""
    query(dsn, "INSERT INTO pgqueue.worker_processes (id, hostname, pid, queues, version,"
               " heartbeat_s) VALUES ('w', 'h', 1, '{}', 'x', 60)")  # fmt: skip
    backlog_behind_three_running(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        [worker] = _ops.live_workers(conn, "w")
        nodes = plan_nodes(conn, _store.workers_list("w"))
    assert worker.running == 3
    assert {index for _, index in scans_of(nodes, "active_jobs")} == {"active_jobs_lease_idx"}


def test_listing_running_jobs_reads_them_without_a_scan_of_the_queue(dsn: str) -> None:
    """`pgqueue jobs list --state running` walked active_jobs newest first to find running
    jobs, which are the oldest of a backlog: behind 3.4 million queued jobs, 8.7 s for the
    first question at 3 a.m. It reads the running rows' partial index (lease_idx) now."""
    backlog_behind_three_running(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = _ops.list_jobs(conn, state="running")
        nodes = plan_nodes(conn, _store.jobs_list("running"))
    assert [job.id for job in found] == [3, 2, 1]
    assert {index for _, index in scans_of(nodes, "active_jobs")} == {"active_jobs_lease_idx"}
    assert not scans_of(nodes, "finished_jobs")


async def test_workers_prune_per_state_retention_automatically(dsn: str, conn: Any) -> None:
    """With retention succeeded=0, workers delete succeeded jobs; failed ones are kept."""
    app = make_app(dsn, retention={"succeeded": 0, "failed": 3600})
    app.using("add").enqueue_many(conn, [((i, i), {}) for i in range(20)])
    app.using("boom").enqueue(conn)
    conn.commit()
    w = worker(app, rescue_interval=0.05)
    await run_worker_until(w, lambda: states(dsn) == {"failed": 1})


def test_retention_defaults_keep_failed_longest() -> None:
    """Default retention: failed jobs outlive cancelled ones, which outlive succeeded ones."""
    ages = pgqueue.PgQueue().retention
    assert ages["failed"] > ages["cancelled"] > ages["succeeded"]
    assert "failed" not in pgqueue.PgQueue(retention={"failed": None}).retention


async def test_store_result_false_discards_the_return_value(dsn: str, conn: Any) -> None:
    """@app.task(store_result=False): the job succeeds with a NULL result."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="big", queue="q", store_result=False)
    async def big() -> str:
        return "x" * 1000

    app.using("big").enqueue(conn)
    conn.commit()
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 1})
    assert query(dsn, "SELECT result FROM pgqueue.jobs") == [(None,)]


async def test_wait_is_woken_by_the_completion_notification(dsn: str, conn: Any) -> None:
    """wait returns once the job finishes, woken by NOTIFY: the fallback poll is 60 s away.

    The lag from the ack's commit to wait's return is asserted under 1 s, a generous margin
    over the 100 ms target (bench/bench_completion_notify.py measures it: a few ms)."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 20, 22)
    conn.commit()
    w = worker(app)
    runner = asyncio.create_task(w.run())
    try:
        job = await app.wait(job_id, timeout=30, poll_interval=60)
        [(lag,)] = query(dsn, "SELECT extract(epoch FROM clock_timestamp() - finished_at)::float8"
                              " FROM pgqueue.jobs WHERE id = %s", [job_id])  # fmt: skip
    finally:
        w.stop()
        await runner
    assert (job.state, job.result) == ("succeeded", 42)
    assert lag < 1.0


async def test_wait_sync_returns_the_finished_job_from_another_thread(dsn: str, conn: Any) -> None:
    """wait_sync blocks its thread until the job has finished, then returns it."""
    app = make_app(dsn)
    job_id = app.using("boom").enqueue(conn)
    conn.commit()
    result: list[pgqueue.Job] = []
    waiter = threading.Thread(target=lambda: result.append(app.wait_sync(job_id, timeout=30)))
    waiter.start()
    await run_worker_until(worker(app), lambda: states(dsn) == {"failed": 1})
    await asyncio.to_thread(waiter.join, 30)
    assert [j.state for j in result] == ["failed"]


async def test_wait_times_out_and_refuses_unknown_jobs(dsn: str, conn: Any) -> None:
    """wait raises TimeoutError for an unfinished job and JobStateError for an unknown one."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 1, 2)
    conn.commit()
    with pytest.raises(TimeoutError):
        await app.wait(job_id, timeout=0.2, poll_interval=0.05)
    with pytest.raises(pgqueue.JobStateError):
        app.wait_sync(999_999, timeout=1)


async def test_wait_before_the_enqueue_commits_says_to_commit_first(dsn: str, conn: Any) -> None:
    """Waiting on the id enqueue just returned, before its transaction commits, said only
    "there is no job N"; the message now names the commit as the likely reason."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 1, 2)
    expected = (
        rf"^there is no job {job_id}: never enqueued, pruned, or enqueued by a transaction that"
        r" has not committed \(wait after the commit\)$"
    )
    with pytest.raises(pgqueue.JobStateError, match=expected):
        await app.wait(job_id, timeout=1)
    with pytest.raises(pgqueue.JobStateError, match=expected):
        app.wait_sync(job_id, timeout=1)
    conn.rollback()


async def test_cancel_stops_a_running_job_at_the_next_heartbeat(dsn: str, conn: Any) -> None:
    """cancel on a running job: its worker stops it and it ends cancelled; wait sees that."""
    app = pgqueue.PgQueue(dsn)
    started = asyncio.Event()

    @app.task(name="slow", queue="q")
    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = app.using("slow").enqueue(conn)
    conn.commit()
    w = worker(app, lease=0.6)  # heartbeats every 0.2 s
    runner = asyncio.create_task(w.run())
    try:
        await asyncio.wait_for(started.wait(), 30)
        assert await asyncio.to_thread(cancel_and_commit, app, dsn, job_id) == "requested"
        job = await app.wait(job_id, timeout=30)
    finally:
        w.stop()
        await runner
    assert (job.state, job.last_error) == ("cancelled", "cancelled on request")


def cancel_and_commit(app: pgqueue.PgQueue, dsn: str, job_id: int) -> str:
    """Cancel ``job_id`` in a transaction of its own."""
    with psycopg.connect(dsn) as own:
        return admin.cancel_job(own, job_id)


def test_get_job_decodes_json_whatever_the_connection_loads(dsn: str) -> None:
    """On a connection that loads jsonb as text (as Django's does), get_job still decodes."""
    from psycopg.types.string import TextLoader

    with psycopg.connect(dsn) as conn:
        conn.adapters.register_loader("jsonb", TextLoader)
        job_id = pgqueue.PgQueue().enqueue(conn, "some.task", [1, "two"], flag=True)
        job = pgqueue.PgQueue().get_job(conn, job_id)
    assert job is not None
    assert (job.args, job.kwargs, job.errors, job.meta) == ([[1, "two"]], {"flag": True}, [], {})


@pytest.mark.parametrize("bad", [True, "7", 1.0, 2**63, -(2**63) - 1, None])
async def test_job_ids_sql_cannot_take_are_refused_and_keep_the_transaction(
    dsn: str, conn: Any, aconn: Any, bad: Any
) -> None:
    """A bool, str, float, None or int beyond bigint as a job id raises ValueError naming it,
    before any SQL. app.cancel(conn, 2**63) used to fail with "function pgqueue.cancel(numeric)
    does not exist" and abort the caller's transaction; get_job(True) with "operator does not
    exist: bigint = boolean"; retry(2**63) with "bigint out of range"."""
    app = make_app(dsn)
    steer = [app.get_job, app.retry, app.cancel, admin.cancel_job, admin.retry_job]
    for call in steer:
        with pytest.raises(ValueError, match=f"invalid job id {bad!r}"):
            call(conn, bad)
    for acall in (app.aget_job, app.acancel, admin.acancel_job):
        with pytest.raises(ValueError, match=f"invalid job id {bad!r}"):
            await acall(aconn, bad)
    job_id = app.using("add").enqueue(conn, 1, 2)  # the transaction is still usable
    conn.commit()
    assert app.get_job(conn, job_id) is not None
    assert app.get_job(conn, 0) is None and app.cancel(conn, -1) is None  # ids no job has


@pytest.mark.parametrize("bad", [5, b"w1", "w\x00"])
def test_a_worker_name_sql_cannot_take_is_refused_and_keeps_the_transaction(
    conn: Any, bad: Any
) -> None:
    """live_workers(conn, 5) failed with "operator does not exist: text = smallint"
    (UndefinedFunction) and aborted the caller's transaction; now a ValueError, before SQL."""
    with pytest.raises(ValueError, match=re.escape(f"invalid worker name {bad!r}")):
        admin.live_workers(conn, bad)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert admin.live_workers(conn, " padded ") == []  # a filter: any text is looked up


@pytest.mark.parametrize(
    ("timeout", "poll_interval", "message"),
    [(math.nan, 0.05, "timeout must be"), ("5", 0.05, "timeout must be"),
     (-1, 0.05, "timeout must be"), (0.3, 0, "poll_interval must be"),
     (0.3, -1, "poll_interval must be"), (0.3, math.nan, "poll_interval must be"),
     (0.3, math.inf, "poll_interval must be"), (0.3, None, "poll_interval must be"),
     (-(10**400), 0.05, "timeout must be a number of seconds >= 0"),
     (0.3, 10**400, "poll_interval must be a finite number of seconds > 0")],
    ids=lambda value: "10**400" if value in (10**400, -(10**400)) else None,
)  # fmt: skip
async def test_wait_refuses_timeouts_and_poll_intervals_that_never_end_or_never_rest(
    dsn: str, conn: Any, timeout: Any, poll_interval: Any, message: str
) -> None:
    """A NaN timeout never expired (wait hung for ever on an unfinished job) and a poll
    interval of 0 or less re-read the job in a busy loop; a string raised a bare TypeError,
    and an int past every float (10**400) OverflowError. Both wait and wait_sync now raise
    ValueError naming the value, before connecting."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 1, 2)  # no worker: it never finishes
    conn.commit()
    with pytest.raises(ValueError, match=message):
        await asyncio.wait_for(app.wait(job_id, timeout=timeout, poll_interval=poll_interval), 3)
    raised: list[BaseException] = []

    def wait_sync() -> None:
        try:
            app.wait_sync(job_id, timeout=timeout, poll_interval=poll_interval)
        except BaseException as exc:
            raised.append(exc)

    waiter = threading.Thread(target=wait_sync, daemon=True)  # a hang must not hold pytest
    waiter.start()
    await asyncio.to_thread(waiter.join, 3)
    assert [type(e) for e in raised] == [ValueError] and message in str(raised[0])


@pytest.mark.parametrize("timeout", [math.inf, 10**400], ids=["inf", "10**400"])
async def test_wait_with_an_infinite_timeout_waits_for_the_job(
    dsn: str, conn: Any, timeout: Any
) -> None:
    """wait(timeout=math.inf) waited for ever, as the docs' "a number >= 0" allowed, until
    the check for ints past every float refused it with ValueError: it waits again, as None
    does, and so does 10**400 (which the clock's float arithmetic cannot add)."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 1, 2)
    conn.commit()
    waits = asyncio.gather(
        app.wait(job_id, timeout=timeout, poll_interval=0.1),
        asyncio.to_thread(app.wait_sync, job_id, timeout=timeout, poll_interval=0.1),
    )
    await asyncio.sleep(0.5)  # both wait: neither was refused nor gave up
    assert app.cancel(conn, job_id) == "cancelled"
    conn.commit()
    jobs = await asyncio.wait_for(waits, 5)
    assert [job.state for job in jobs] == ["cancelled", "cancelled"]


@pytest.mark.parametrize(
    ("call", "message"),
    [(lambda c: _ops.list_jobs(c, limit=-1), "limit must be an int from 0"),
     (lambda c: _ops.list_jobs(c, limit=2**63), "limit must be an int from 0"),
     (lambda c: _ops.list_jobs(c, limit=True), "limit must be an int from 0"),
     (lambda c: _ops.list_jobs(c, queue=5), "invalid queue name 5"),
     (lambda c: _ops.list_jobs(c, queue="q\x00"), "invalid queue name"),
     (lambda c: _ops.list_jobs(c, task="t\udc80"), "invalid task name"),
     (lambda c: _ops.retry_failed(c, task=5), "invalid task name 5"),
     (lambda c: _ops.prune(c, math.inf), "older_than must be seconds or a timedelta from 0"),
     (lambda c: _ops.prune(c, math.nan), "older_than must be seconds or a timedelta from 0"),
     (lambda c: _ops.prune(c, 1e300), "older_than must be seconds or a timedelta from 0"),
     (lambda c: _ops.prune(c, "7d"), "older_than must be seconds or a timedelta"),
     (lambda c: _ops.prune(c, -1), "older_than must be seconds or a timedelta from 0"),
     (lambda c: _ops.prune(c, 0, states="failed"), r"such as \['failed'\]"),
     (lambda c: _ops.prune(c, 0, batch=-1), "batch must be an int from 1"),
     (lambda c: _ops.prune(c, 0, batch=0), "batch must be an int from 1"),
     (lambda c: _ops.prune(c, 0, batch=10**20), "batch must be an int from 1"),
     (lambda c: _ops.prune_by_state(c, {"failed": math.inf}), "age of 'failed' jobs must be")],
)  # fmt: skip
def test_admin_arguments_sql_cannot_take_are_refused_and_keep_the_transaction(
    dsn: str, conn: Any, call: Any, message: str
) -> None:
    """Each of these failed in SQL (LIMIT must not be negative, bigint out of range, interval
    out of range, operator does not exist: text = smallint, ...) once a finished job was there
    to look at, aborting the caller's transaction; prune(states="failed") pruned the states
    'a', 'd', 'e'...; batch=0 pruned nothing. Now ValueError names the argument first."""
    query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, finished_at)"
        " VALUES (1, 'q', 't', '[]', '{}', 'failed', 0, 1, 3, now(), now(),"
        " now() - interval '1 d')",
    )
    with pytest.raises(ValueError, match=message):
        call(conn)
    assert _ops.list_jobs(conn, limit=0) == []  # the transaction is still usable
    assert [j.id for j in _ops.list_jobs(conn, limit=None)] == [1]


def test_operations_on_a_connection_that_returns_dicts(dsn: str) -> None:
    """The operations read their rows by position, whatever the caller's connection makes of
    rows: on one opened with ``row_factory=dict_row``, cancel, retry, retry_failed, prune,
    get_job, list_jobs and queue_stats raised KeyError: 0 (or took a dict for a job)."""
    app = make_app(dsn)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        first, second = app.enqueue(conn, "add", 1, 2), app.enqueue(conn, "add", 3, 4)
        assert app.cancel(conn, first) == "cancelled"
        assert admin.cancel_job(conn, second) == "cancelled"
        app.retry(conn, first)
        conn.execute("UPDATE pgqueue.finished_jobs SET state = 'failed'")  # second, as failed
        assert admin.retry_failed(conn) == 1
        assert app.cancel(conn, first) == "cancelled"
        assert admin.prune(conn, 0) == 1
        assert app.get_job(conn, second).state == "queued"  # type: ignore[union-attr]
        assert [job.id for job in admin.list_jobs(conn)] == [second]
        assert [(s.queue, s.queued) for s in admin.queue_stats(conn)] == [("q", 1)]


def test_operations_in_the_callers_pipeline(dsn: str) -> None:
    """Inside the caller's ``conn.pipeline()`` block the operations read their statements'
    results: cancel, retry, retry_failed and prune raised IndexError, get_job found no job."""
    app = make_app(dsn)
    [(job_id,)] = query(dsn, "SELECT pgqueue.enqueue('add', queue => 'q')")
    with psycopg.connect(dsn, autocommit=True) as conn, conn.pipeline():
        assert app.cancel(conn, job_id) == "cancelled"
        assert app.get_job(conn, job_id).state == "cancelled"  # type: ignore[union-attr]
        app.retry(conn, job_id)
        assert app.cancel(conn, job_id) == "cancelled"
        conn.execute("UPDATE pgqueue.finished_jobs SET state = 'failed'")
        assert admin.retry_failed(conn) == 1
        assert app.cancel(conn, job_id) == "cancelled"
        assert admin.prune(conn, 0) == 1
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


def _finished(dsn: str, count: int, state: str = "failed", minutes_ago: int = 60) -> None:
    """``count`` finished jobs of ``state`` on queue "q", ids 1 to ``count``."""
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
               " attempts, max_attempts, run_at, created_at, finished_at) SELECT n, 'q', 't',"
               " '[]', '{}', %s, 0, 1, 1, now(), now(), now() - make_interval(mins => %s)"
               " FROM generate_series(1, %s) AS n", [state, minutes_ago, count])  # fmt: skip


def test_retry_failed_in_batches_commits_each_on_an_autocommit_connection(dsn: str) -> None:
    """retry_failed requeued every failed job in one statement; with batch=N it works N jobs
    at a time, in id order, each batch its own transaction on an autocommit connection (so a
    stop between two keeps the batches done), and says how many in all as before."""
    _finished(dsn, 5)
    with psycopg.connect(dsn, autocommit=True) as conn:
        batches = _ops.retry_failed_batches(conn, batch=2)
        assert next(batches) == 2
        assert query(dsn, "SELECT id FROM pgqueue.active_jobs ORDER BY id") == [(1,), (2,)]
        assert list(batches) == [2, 1]
    assert states(dsn) == {"queued": 5}


def test_retry_failed_in_batches_never_commits_the_callers_transaction(dsn: str) -> None:
    """On a connection in a transaction, the batches are the caller's to commit or roll back;
    the count is the total, and a bad batch size is refused before any SQL."""
    _finished(dsn, 5)
    with psycopg.connect(dsn) as conn:
        assert admin.retry_failed(conn, batch=2) == 5
        conn.rollback()
        with pytest.raises(ValueError, match="batch must be an int from 1 to"):
            admin.retry_failed(conn, batch=0)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert states(dsn) == {"failed": 5}


def test_queue_stats_estimates_a_big_history_from_a_sample(dsn: str) -> None:
    """queue_stats read the whole history: a second per 2 million finished jobs, on every
    refresh of `stats --watch`. With exact=False it reads at most sample_pages of it: the
    finished counts of a bigger one are estimates, said so; the active counts and the jobs
    finished in the last five minutes stay exact. A small history is counted exactly."""
    _finished(dsn, 20_000, "succeeded")
    query(dsn, "UPDATE pgqueue.finished_jobs SET finished_at = now(), queue = 'r' WHERE id <= 30")
    query(dsn, "INSERT INTO pgqueue.active_jobs (id, queue, task) VALUES (100000, 'q', 't')")
    with psycopg.connect(dsn, autocommit=True) as conn:
        [q, r] = _ops.queue_stats(conn, exact=False, sample_pages=20)
        exact = _ops.queue_stats(conn, exact=False)  # 20,000 small jobs: under 2,000 pages
        view = _ops.queue_stats(conn)
    assert [replace(s, oldest_runnable_age=None) for s in exact] == [
        replace(s, oldest_runnable_age=None) for s in view
    ]
    assert (q.queue, q.queued, q.estimated) == ("q", 1, True)
    assert (r.queue, r.finished_per_minute, r.estimated) == ("r", 6.0, True)
    assert 10_000 < q.succeeded < 30_000
    assert [(s.queue, s.succeeded, s.estimated) for s in exact] == [
        ("q", 19_970, False), ("r", 30, False)
    ]  # fmt: skip


def test_queue_stats_estimate_counts_failed_jobs_exactly(dsn: str) -> None:
    """An operator looking for failures must not be told there are none: the estimate left out
    a queue whose only jobs were failed ones the sample missed, and showed a few failed jobs as
    ~0. The failed jobs are counted exactly, on the (state, finished_at) index."""
    _finished(dsn, 20_000, "succeeded")
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
               " attempts, max_attempts, run_at, created_at, finished_at) SELECT n, 'f', 't',"
               " '[]', '{}', 'failed', 0, 1, 1, now(), now(), now() - interval '1 hour'"
               " FROM generate_series(20001, 20002) AS n")  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = _ops.queue_stats(conn, exact=False, sample_pages=1)
    assert [(s.queue, s.failed, s.estimated) for s in found if s.queue == "f"] == [("f", 2, True)]


def test_queue_stats_estimate_past_the_failed_cap_keeps_the_newest_failures(dsn: str) -> None:
    """Past failed_cap failed jobs the failed counts are estimated, as the other finished ones,
    but never below the newest failures read: a queue among them is not shown without any."""
    _finished(dsn, 20_000, "failed", minutes_ago=120)
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
               " attempts, max_attempts, run_at, created_at, finished_at) SELECT n, 'f', 't',"
               " '[]', '{}', 'failed', 0, 1, 1, now(), now(), now() - interval '1 hour'"
               " FROM generate_series(20001, 20002) AS n")  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        rows = _store.run(cur, _store.queues_stats_sampled(0.000001, failed_cap=2))
    assert [(row[0], row[5], row[-1]) for row in rows] == [("f", 2, True), ("q", 1, True)]


def test_queue_stats_estimate_reads_a_sample_and_the_recent_jobs_index(dsn: str) -> None:
    """The estimating statement reads the history through a sample scan and the jobs finished
    lately on the (state, finished_at) index, never a sequential scan of all of it."""
    _finished(dsn, 20_000, "succeeded")
    query(dsn, "ANALYZE pgqueue.finished_jobs")
    with psycopg.connect(dsn, autocommit=True) as conn:
        nodes = plan_nodes(conn, _store.queues_stats_sampled(1.0))
    history = scans_of(nodes, "finished_jobs")
    assert ("Sample Scan", None) in history and "Seq Scan" not in {kind for kind, _ in history}
    assert "finished_jobs_state_finished_idx" in {node.get("Index Name") for node in nodes}


def test_listing_unfinished_jobs_of_a_task_reads_no_history(dsn: str) -> None:
    """`jobs list --state queued --task T` (as docs/reference/cli-operations.md says) reads the
    active jobs only, never the history, however few jobs match."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for state in ("queued", "running"):
            nodes = plan_nodes(conn, _store.jobs_list(state, "q", "no.such.task"))
            assert not scans_of(nodes, "finished_jobs"), state


async def test_a_jobs_fields_follow_its_state_as_the_reference_says(dsn: str, conn: Any) -> None:
    """docs/reference/python-api.md, Job: tz-aware timestamps, finished_at only once finished,
    no lease once finished, result as JSON gives it back (a tuple as a list, int keys as
    strings)."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="pair", queue="q")
    async def pair() -> Any:
        return (1, {2: "b"})

    job_id = app.using("pair").enqueue(conn)
    conn.commit()
    queued = app.get_job(conn, job_id)
    assert queued is not None and (queued.finished_at, queued.result) == (None, None)
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 1})
    done = app.get_job(conn, job_id)
    assert done is not None and done.finished_at is not None and done.started_at is not None
    assert (done.lease_expires_at, done.cancel_requested) == (None, False)
    assert done.result == [1, {"2": "b"}]
    assert all(t.tzinfo is not None for t in (done.run_at, done.created_at, done.finished_at))
