"""Outcomes other than retries are reported when the attempt ends, before they are written: a
report the database then contradicts is corrected, and an outcome never to be written is not
reported as the job's end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pgqueue
from pgqueue._worker import _worker
from tests.helpers import query, run_worker_until

# Refuses to move a job to history as succeeded; a failure passes.
REFUSE_SUCCESS = """
CREATE FUNCTION refuse_success() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF NEW.state = 'succeeded' THEN
        RAISE EXCEPTION 'injected: no success here' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_success BEFORE INSERT ON pgqueue.finished_jobs
    FOR EACH ROW EXECUTE FUNCTION refuse_success();
"""


def _actions(caplog: Any, action: str) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


async def test_a_success_the_database_records_as_failed_is_reported_failed(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The database refuses a success, and the acker records the job as failed. The worker
    reported it succeeded when it ended: its stats must say failed, as the database does, and
    a job_failed record must name the job."""
    caplog.set_level(logging.DEBUG, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)

    @app.task(name="fine", queue="q")
    async def fine() -> None:
        pass

    job_id = app.using("fine").enqueue(conn)
    conn.commit()
    query(dsn, REFUSE_SUCCESS)
    w = app.worker(queues=["q"], poll_interval=0.05)
    ended = "SELECT state FROM pgqueue.jobs"
    await run_worker_until(w, lambda: query(dsn, ended) == [("failed",)], timeout=10)
    assert (w.stats.succeeded, w.stats.failed) == (0, 1)
    [failed] = _actions(caplog, "job_failed")
    assert (failed.levelno, failed.job_id, failed.attempt) == (logging.ERROR, job_id, 1)
    assert "not succeeded as reported" in failed.getMessage()


async def test_an_abandoned_coroutine_ending_after_the_last_writes_is_not_reported_succeeded(
    dsn: str, conn: Any, caplog: Any, monkeypatch: Any
) -> None:
    """A coroutine ignores its cancellation at shutdown, is abandoned, and returns after the
    worker's last writes: its success is never written, and its job is back in the queue to
    run again. The worker must not log or count it as succeeded, and logs outcome_unwritten
    naming the job instead."""
    monkeypatch.setattr(_worker, "CANCEL_GRACE", 0.2)
    caplog.set_level(logging.DEBUG, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)
    release = asyncio.Event()

    @app.task(name="stubborn", queue="q")
    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    job_id = app.using("stubborn").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, shutdown_timeout=0.1)
    await run_worker_until(w, lambda: w.running == 1, timeout=10)
    assert w.abandoned_coroutines() == 1
    release.set()
    await asyncio.wait(w._abandoned)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]
    assert w.stats.succeeded == 0
    assert _actions(caplog, "job_succeeded") == []
    [unwritten] = _actions(caplog, "outcome_unwritten")
    assert (unwritten.levelno, unwritten.job_id) == (logging.WARNING, job_id)
