"""A job whose data PostgreSQL or Python cannot handle fails on its own, with the reason;
no other job waits behind it, and the worker goes on."""

from __future__ import annotations

import logging

import psycopg
import pytest

import pgqueue
from pgqueue import PgQueueError, _store
from pgqueue._ops import aget_job, get_job, list_jobs, retry_job
from pgqueue._store import Outcome
from pgqueue._worker._acker import Acker
from pgqueue._worker._db import Db
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t


async def test_errors_and_results_psql_cannot_hold_end_their_jobs_and_no_other(
    dsn: str, conn
) -> None:
    """A NUL or lone surrogate in an error is escaped; such a result fails its job at once.

    Before, either made the database refuse the whole ack batch, forever: the worker's every
    later outcome waited behind it."""
    bad_error = t.raises_unstorable_text.enqueue(conn, "nul:")
    bad_result = t.returns_a_lone_surrogate.enqueue(conn)
    fine = [t.add.enqueue(conn, i, 1) for i in range(20)]
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 20, "failed": 2})
    rows = dict(query(dsn, "SELECT id, last_error FROM pgqueue.jobs WHERE state = 'failed'"))
    assert rows[bad_error] == "ValueError: nul:\\x00 and \\ud800"
    assert rows[bad_result].startswith("the return value is not JSON-serialisable")
    assert "lone surrogate ('\\udc80')" in rows[bad_result]
    [(traceback,)] = query(
        dsn, "SELECT errors -> 0 ->> 'traceback' FROM pgqueue.jobs WHERE id = %s", [bad_error]
    )
    assert "raises_unstorable_text" in traceback and "\\x00" in traceback
    results = dict(query(dsn, "SELECT id, result FROM pgqueue.jobs WHERE state = 'succeeded'"))
    assert [results[i] for i in fine] == [i + 1 for i in range(20)]


async def test_a_row_python_cannot_decode_fails_its_job_not_the_claim(dsn: str, conn) -> None:
    """args nested 3,000 deep (PostgreSQL takes them; Python's decoder stops near 1,000), as
    SQL can enqueue them: that job fails at once with the reason and its args kept, and the
    jobs claimed with it run. Before, the claim raised RecursionError and the worker died,
    leaving the whole claim running until its lease ran out, and then again."""
    deep = "[" * 3000 + "]" * 3000
    [(bad,)] = query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.add', %s::jsonb,"
                          " queue => 'io', max_attempts => 3)", [deep])  # fmt: skip
    fine = [t.add.enqueue(conn, i, 1) for i in range(5)]
    too_deep_result = t.returns_deep_nesting.enqueue(conn)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 5, "failed": 2})
    failed = ("SELECT id, attempts, last_error, pg_column_size(args) FROM pgqueue.jobs"
              " WHERE state = 'failed'")  # fmt: skip
    rows = {r[0]: r[1:] for r in query(dsn, failed)}
    attempts, error, size = rows[bad]
    assert attempts == 1
    assert error.startswith("pgqueue could not decode this job's args, kwargs or meta: "
                            "RecursionError(")  # fmt: skip
    assert size > 3000  # the arguments are kept for whoever looks into it
    attempts, error, _ = rows[too_deep_result]
    assert (attempts, error) == (
        1, "the return value is not JSON-serialisable: the value is nested too deeply to "
           "encode as JSON",
    )  # fmt: skip
    results = dict(query(dsn, "SELECT id, result FROM pgqueue.jobs WHERE state = 'succeeded'"))
    assert [results[i] for i in fine] == [1, 2, 3, 4, 5]


def _claim(dsn: str, count: int) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        claim = _store.run(c.cursor(), _store.jobs_claim("w", {"io": count}, 30))
    return [row[0] for row in claim.rows]


async def test_a_refused_outcome_fails_its_job_and_the_rest_of_the_batch_is_written(
    dsn: str, conn, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses one outcome of a batch (a delay past what an interval holds): the
    acker writes the others, and records that job as failed with the database's reason."""
    for i in range(6):
        t.add.enqueue(conn, i, 0)
    conn.commit()
    ids = _claim(dsn, 6)
    assert len(ids) == 6
    db = Db(dsn, "ack")
    acker = Acker(db, batch=100, interval=0.01, worker="w")
    for job_id in ids:
        retry = job_id == ids[2] or job_id == ids[4]
        delay = 1e300 if job_id == ids[2] else 0.0  # ids[4]: a good retry beside the bad one
        acker.add(Outcome(job_id, 1, "queued" if retry else "succeeded", delay=delay))
    with caplog.at_level(logging.WARNING, "pgqueue.worker"):
        await acker.flush()
    await db.close()
    assert acker.pending == 0
    rows = dict(query(dsn, "SELECT id, state FROM pgqueue.jobs"))
    assert rows == {i: "failed" if i == ids[2] else "queued" if i == ids[4] else "succeeded"
                    for i in ids}  # fmt: skip
    [(error,)] = query(dsn, "SELECT last_error FROM pgqueue.jobs WHERE id = %s", [ids[2]])
    assert error == (
        "pgqueue could not store this attempt's outcome (queued): timestamp out of range"
    )
    actions = [r.__dict__.get("action") for r in caplog.records]
    assert actions.count("ack_refused") == 2  # the batch, then the one outcome
    assert "ack_lease_lost" not in actions


async def test_a_broken_connection_still_keeps_the_whole_batch_for_the_next_try(dsn: str) -> None:
    """Only refusals split a batch: a connection that fails keeps every outcome buffered."""
    db = Db("postgresql://127.0.0.1:1/nowhere", "ack")
    acker = Acker(db, batch=100, interval=0.01, worker="w")
    for job_id in (1, 2, 3):
        acker.add(Outcome(job_id, 1, "succeeded"))
    with pytest.raises(psycopg.OperationalError):
        await acker.flush()
    assert acker.pending == 3


async def test_reading_a_job_python_cannot_decode_says_so_and_names_it(dsn: str, conn) -> None:
    """get_job, aget_job, list_jobs and retry_job on a job whose args are nested 3,000 deep
    (as SQL can enqueue them) raise PgQueueError naming the job, not a RecursionError from
    psycopg's JSON loader; the connection stays usable."""
    [(bad,)] = query(dsn, "SELECT pgqueue.enqueue('t', %s::jsonb)", ["[" * 3000 + "]" * 3000])
    with pytest.raises(PgQueueError, match=rf"^job {bad} has a JSON value .* nested too deeply"):
        get_job(conn, bad)
    with pytest.raises(PgQueueError, match=rf"^job {bad} has a JSON value"):
        retry_job(conn, bad)
    with pytest.raises(PgQueueError, match=r"^a job listed has a JSON value"):
        list_jobs(conn)
    async with await psycopg.AsyncConnection.connect(dsn) as aconn:
        with pytest.raises(PgQueueError, match=rf"^job {bad} has a JSON value"):
            await aget_job(aconn, bad)
    fine = t.add.enqueue(conn, 1, 2)
    job = get_job(conn, fine)
    assert job is not None and job.args == [1, 2]


def _redact_raises(text: str) -> str:
    raise ValueError("the redactor is broken")


class _PolicyRaises(pgqueue.RetryPolicy):
    def delay(self, attempt: int) -> float:
        raise ZeroDivisionError("no delay for you")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print me")


hooks_app = pgqueue.PgQueue(redact=_redact_raises)


@hooks_app.task(queue="io", max_attempts=1)
async def fails_under_a_broken_redact() -> None:
    raise RuntimeError("secret=hunter2")


@hooks_app.task(queue="io", max_attempts=2, retry=_PolicyRaises())
async def fails_under_a_broken_policy() -> None:
    raise RuntimeError("retry me")


@hooks_app.task(queue="io", max_attempts=1)
async def raises_unprintable() -> None:
    raise _Unprintable


@hooks_app.task(queue="io")
async def fine(i: int) -> int:
    return i


async def test_a_redact_retry_policy_or_exception_that_raises_leaves_no_slot_stuck(
    dsn: str, conn, caplog: pytest.LogCaptureFixture
) -> None:
    """With one slot: a redact function that raises, a RetryPolicy subclass whose delay()
    raises, and an exception whose __str__ raises each escaped the executor before; the job
    stayed running with no outcome, its slot was never given back, and the worker ran nothing
    more. Now each job gets an outcome (the text withheld, the default retry delay, a
    placeholder for the message) and the jobs behind them run."""
    hooks_app._dsn = dsn
    redacted = fails_under_a_broken_redact.enqueue(conn)
    retried = fails_under_a_broken_policy.enqueue(conn)
    unprintable = raises_unprintable.using(queue="io").enqueue(conn)
    fine_ids = [fine.enqueue(conn, i) for i in range(3)]
    conn.commit()
    worker = hooks_app.worker(dsn=dsn, queues=["io"], concurrency=1, poll_interval=0.05)
    with caplog.at_level(logging.ERROR, logger="pgqueue.worker"):
        await run_worker_until(
            worker, lambda: states(dsn) == {"succeeded": 3, "failed": 3}, timeout=60
        )
    rows = {r[0]: r[1:] for r in query(dsn, "SELECT id, attempts, last_error FROM pgqueue.jobs")}
    assert rows[redacted] == (
        1, "[withheld: the app's redact function raised ValueError]"
    )  # fmt: skip
    assert rows[retried][0] == 2  # retried once, on the default policy's delay
    assert rows[unprintable][1] == "[withheld: the app's redact function raised ValueError]"
    assert all(rows[i][1] is None for i in fine_ids)
    actions = {getattr(r, "action", None) for r in caplog.records}
    assert {"redact_error", "retry_policy_error"} <= actions
    redacts = {r.job_id for r in caplog.records if getattr(r, "action", None) == "redact_error"}
    assert {redacted, unprintable} <= redacts <= {redacted, retried, unprintable}


def _redact_exits(text: str) -> str:
    if "KeyboardInterrupt" in text:
        raise KeyboardInterrupt
    raise SystemExit(f"leaked {text}")


exiting_app = pgqueue.PgQueue(redact=_redact_exits)


@exiting_app.task(queue="io", max_attempts=1)
async def fails_under_an_exiting_redact(secret: str) -> None:
    raise RuntimeError(secret)


@exiting_app.task(queue="io")
async def fine_under_an_exiting_redact(i: int) -> int:
    return i


async def test_a_redact_that_raises_system_exit_or_keyboard_interrupt_stops_no_worker(
    dsn: str, conn
) -> None:
    """A redact function that raised SystemExit or KeyboardInterrupt (any BaseException)
    escaped the executor and stopped the worker's run(), with its job's outcome unwritten.
    Now it is a redact failure like any other: the text is withheld, saying only the
    exception's type, the job fails, and the jobs behind it run."""
    exiting_app._dsn = dsn
    exits = fails_under_an_exiting_redact.enqueue(conn, "secret=hunter2")
    interrupts = fails_under_an_exiting_redact.enqueue(conn, "KeyboardInterrupt")
    for i in range(3):
        fine_under_an_exiting_redact.enqueue(conn, i)
    conn.commit()
    worker = exiting_app.worker(dsn=dsn, queues=["io"], concurrency=1, poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 3, "failed": 2}, timeout=60)
    rows = dict(query(dsn, "SELECT id, last_error FROM pgqueue.jobs WHERE state = 'failed'"))
    assert rows == {
        exits: "[withheld: the app's redact function raised SystemExit]",
        interrupts: "[withheld: the app's redact function raised KeyboardInterrupt]",
    }
    [(errors,)] = query(dsn, "SELECT errors::text FROM pgqueue.jobs WHERE id = %s", [exits])
    assert "hunter2" not in errors


def test_an_exception_whose_str_raises_is_described_by_its_type() -> None:
    """str() of such an exception raised inside the executor's failure handling."""
    from pgqueue._worker._executor import describe

    assert describe(_Unprintable()) == "_Unprintable: <str() of the exception raised RuntimeError>"


async def test_an_executor_that_raises_fails_the_job_and_gives_its_slot_back(
    dsn: str, conn
) -> None:
    """The worker's last line of defence: whatever escapes the executor (here injected for
    the first job) fails that job with the exception's type, and the slot comes back."""
    hooks_app._dsn = dsn
    ids = [fine.enqueue(conn, i) for i in range(3)]
    conn.commit()
    worker = hooks_app.worker(dsn=dsn, queues=["io"], concurrency=1, poll_interval=0.05)
    real_run = worker._executor.run

    async def run_once_broken(job, ctx, *task):  # type: ignore[no-untyped-def]
        if job.id == ids[0]:
            raise LookupError("a bug")
        return await real_run(job, ctx, *task)

    worker._executor.run = run_once_broken  # type: ignore[method-assign]
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 2, "failed": 1})
    [(error,)] = query(dsn, "SELECT last_error FROM pgqueue.jobs WHERE id = %s", [ids[0]])
    assert error == "pgqueue could not make this attempt's outcome: LookupError"
