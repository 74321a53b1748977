"""Retries are reported once their ack is written: every written retry is reported, exactly
once, as the database ended it, and none stays held by the worker."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

import pgqueue
from tests.helpers import query, run_worker_until

SNOOZED = "SELECT count(*) FROM pgqueue.jobs WHERE state = 'queued' AND run_at > now()"


def snoozing_app(dsn: str) -> pgqueue.PgQueue:
    """An app whose task "snooze" always raises Retry(3600): its job goes back to queued."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="snooze", queue="q")
    async def snooze() -> None:
        raise pgqueue.Retry(3600)

    return app


def snoozing_once_app(dsn: str, first: Callable[[], object] | None = None) -> pgqueue.PgQueue:
    """An app whose task "snooze_once" raises Retry(3600) on its first run, after calling
    ``first`` in a thread, and returns on the runs after it."""
    app = pgqueue.PgQueue(dsn)
    ran: list[int] = []

    @app.task(name="snooze_once", queue="q")
    async def snooze_once() -> None:
        ran.append(1)
        if len(ran) == 1:
            if first is not None:
                await asyncio.to_thread(first)
            raise pgqueue.Retry(3600)

    return app


def faulty_acks(w: pgqueue.Worker, faults: dict[int, Any]) -> list[Any]:
    """Make the acker's n-th statement (1-based) raise ``faults[n]`` instead of running."""
    real = w._ack_db.run
    calls: list[Any] = []

    async def run(q: Any) -> Any:
        calls.append(q)
        fault = faults.get(len(calls))
        if fault is not None:
            raise fault
        return await real(q)

    w._ack_db.run = run  # type: ignore[method-assign]
    return calls


async def test_retries_written_one_by_one_before_a_broken_connection_are_reported(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """A refused batch is written one outcome at a time; the connection breaks after the first
    one is written. That retry is written: it must still be reported (log line, listeners,
    stats) and leave Worker._retrying, as the other ones written later are."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = snoozing_app(dsn)
    for _ in range(3):
        app.using("snooze").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, ack_interval=0.5)
    seen: list[str] = []
    w.events.listeners.append(lambda event: seen.append(event.state))
    calls = faulty_acks(w, {
        1: psycopg.DataError("injected: the batch is refused"),
        3: psycopg.OperationalError("injected: the connection broke"),
    })  # fmt: skip
    await run_worker_until(w, lambda: query(dsn, SNOOZED) == [(3,)], timeout=10)
    assert len(json.loads(calls[0].params["outcomes"])) == 3  # one batch of the three
    assert (w.stats.rescheduled, w.stats.retried) == (3, 0)  # Retry() asks, nothing failed
    assert seen == ["retrying"] * 3
    assert w._retrying == {}
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions.count("job_retrying") == 3


async def test_a_retry_the_acker_records_as_failed_is_reported_failed(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The database refuses a retry's outcome on its own: the acker records the job as failed
    instead. The worker's log line, listeners and stats must say failed, as the database does,
    not retrying."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = snoozing_app(dsn)
    app.using("snooze").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05)
    seen: list[str] = []
    w.events.listeners.append(lambda event: seen.append(event.state))
    faulty_acks(w, {
        1: psycopg.DataError("injected: the batch is refused"),
        2: psycopg.DataError("injected: the retry alone is refused"),
    })  # fmt: skip
    ended = "SELECT count(*) FROM pgqueue.jobs WHERE state = 'failed'"
    await run_worker_until(w, lambda: query(dsn, ended) == [(1,)], timeout=10)
    assert seen == ["failed"]
    assert (w.stats.failed, w.stats.retried) == (1, 0)


async def test_on_failure_of_a_retry_recorded_as_failed_at_shutdown_gets_the_drain(
    dsn: str, conn: Any
) -> None:
    """A retry whose outcome the database refuses is recorded as failed, and its task's
    on_failure runs. Written by the last flush at shutdown, the callback must still get the
    time shutdown gives callbacks (Events.drain): it has run by the time
    Worker.run() returns, not been left to be cancelled with the event loop."""
    app = pgqueue.PgQueue(dsn)
    called: list[int] = []
    ran: list[int] = []

    async def on_failure(event: Any) -> None:
        await asyncio.sleep(0.05)
        called.append(event.job.id)

    @app.task(name="snooze", queue="q", on_failure=on_failure)
    async def snooze() -> None:
        ran.append(1)
        raise pgqueue.Retry(3600)

    app.using("snooze").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, ack_interval=20, ack_batch=1000)
    real = w._ack_db.run

    async def run(q: Any) -> Any:  # the retry is refused, alone too; its failure is written
        outcomes = (q.params or {}).get("outcomes") if hasattr(q, "params") else None
        if outcomes and '"queued"' in outcomes:
            raise psycopg.DataError("injected: the retry is refused")
        return await real(q)

    w._ack_db.run = run  # type: ignore[method-assign]
    await run_worker_until(w, lambda: ran == [1], timeout=10)
    assert query(dsn, "SELECT state FROM pgqueue.jobs") == [("failed",)]
    assert called, "on_failure was scheduled after shutdown stopped waiting for callbacks"


# Refuses, with a check violation, what an ack writes for a job's first attempt: a retry (its
# run_at an hour ahead) and a failure (the row leaving active_jobs). Claims and the rescue of
# an expired lease (run_at unchanged) pass, and so does every write of later attempts.
REFUSE_FIRST_ATTEMPT = """
CREATE FUNCTION refuse_first_attempt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF OLD.attempts = 1 AND (TG_OP = 'DELETE' OR NEW.run_at > now() + interval '1 minute') THEN
        RAISE EXCEPTION 'injected: attempt 1 refuses outcomes' USING ERRCODE = 'check_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER refuse_first_attempt BEFORE UPDATE OR DELETE ON pgqueue.active_jobs
    FOR EACH ROW EXECUTE FUNCTION refuse_first_attempt();
"""


async def test_a_retry_refused_with_its_failure_is_not_reported_and_its_lease_takes_it(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The database refuses a retry's outcome, and then the failure that would record the
    refusal: it holds neither, and the job stays running. The worker must not report it as
    retrying (log, listeners, stats) and must not hold it in Worker._retrying; it logs
    outcome_unwritten naming the job, whose lease expires and whose rescue runs it again."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = snoozing_once_app(dsn)
    job_id = app.using("snooze_once").enqueue(conn)
    conn.commit()
    query(dsn, REFUSE_FIRST_ATTEMPT)
    w = app.worker(queues=["q"], poll_interval=0.05, lease=1, rescue_interval=0.2)
    seen: list[str] = []
    w.events.listeners.append(lambda event: seen.append(event.state))
    done = "SELECT state, attempts, last_error FROM pgqueue.jobs"
    await run_worker_until(w, lambda: query(dsn, done)[0][0] == "succeeded", timeout=20)
    assert query(dsn, done) == [("succeeded", 2, "worker lost")]
    assert seen == ["succeeded"]
    assert (w.stats.retried, w.stats.failed, w.stats.succeeded) == (0, 0, 1)
    assert w._retrying == {}
    unwritten = [r for r in caplog.records if getattr(r, "action", None) == "outcome_unwritten"]
    assert [(r.levelno, r.job_id, r.attempt) for r in unwritten] == [(logging.ERROR, job_id, 1)]


# What the rescue of an expired lease does to a running job: another worker may claim it now.
PUT_BACK = """
UPDATE pgqueue.active_jobs SET state = 'queued', worker_id = NULL, lease_expires_at = NULL
 WHERE state = 'running'
"""


async def run_to_second_attempt(
    w: pgqueue.Worker, dsn: str, caplog: Any
) -> tuple[list[str], list[str | None]]:
    """Run ``w`` until its one job has succeeded, which must be on attempt 2; return the
    states its listeners saw and the actions logged."""
    seen: list[str] = []
    w.events.listeners.append(lambda event: seen.append(event.state))
    done = "SELECT state, attempts FROM pgqueue.jobs"
    await run_worker_until(w, lambda: query(dsn, done)[0][0] == "succeeded", timeout=10)
    assert query(dsn, done) == [("succeeded", 2)]
    return seen, [getattr(r, "action", None) for r in caplog.records]


async def test_a_retry_whose_lease_passed_on_before_its_ack_is_not_reported(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The attempt's lease passes on (its job put back in the queue, as by a rescue) before
    its retry is written: the ack's fence refuses the retry (ack_lease_lost), the database
    holds none, and the job's next attempt succeeds. The worker must not report the retry
    (log, listeners, stats): a retry is reported once written."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = snoozing_once_app(dsn, lambda: query(dsn, PUT_BACK))
    app.using("snooze_once").enqueue(conn)
    conn.commit()
    # No listener: its start asks for a heartbeat (a cancel hint may have been missed), which,
    # late under load, ran after the put-back and stopped the attempt (lease_lost) before
    # its retry reached the acker; the next heartbeat is lease / 3 = 10 s away.
    w = app.worker(queues=["q"], poll_interval=0.05, listen=False)
    seen, actions = await run_to_second_attempt(w, dsn, caplog)
    assert actions.count("ack_lease_lost") == 1, actions
    assert seen == ["succeeded"]
    assert (w.stats.retried, w.stats.succeeded) == (0, 1)
    assert "job_retrying" not in actions
    assert w._retrying == {}


async def test_an_attempt_a_heartbeat_finds_lost_before_its_retry_is_not_reported(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """The other order of the test above, which its listener's early heartbeat made under
    load: a heartbeat runs after the put-back, finds the lease lost and stops the attempt
    (lease_lost) before it raises Retry. No retry is written, none is reported, and the
    job's next attempt succeeds."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    loop = asyncio.get_running_loop()
    beaten = threading.Event()

    def put_back_then_beat() -> None:
        query(dsn, PUT_BACK)
        loop.call_soon_threadsafe(w._cancel_hint, None)  # as the listener does on starting
        beaten.wait(10)

    app = snoozing_once_app(dsn, put_back_then_beat)
    app.using("snooze_once").enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05, listen=False)
    extend = w.extend_leases

    async def extend_leases() -> None:
        await extend()
        beaten.set()

    w.extend_leases = extend_leases  # type: ignore[method-assign]
    seen, actions = await run_to_second_attempt(w, dsn, caplog)
    assert actions.count("lease_lost") == 1, actions
    assert "ack_lease_lost" not in actions and "job_retrying" not in actions
    assert seen == ["succeeded"]
    assert (w.stats.retried, w.stats.succeeded) == (0, 1)
    assert w._retrying == {}


async def test_a_stale_retry_acked_with_the_jobs_next_attempt_is_not_reported(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """Attempt 1's lease passes on while it runs, this worker claims attempt 2, and the two
    outcomes, of one job id, travel in one ack batch: the fence refuses attempt 1's retry and
    writes attempt 2's success. Only what was written may be reported: ack_lease_lost names
    attempt 1, and the retry is not logged, counted nor sent to listeners."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = pgqueue.PgQueue(dsn)
    second = asyncio.Event()
    ran: list[int] = []

    @app.task(name="twice", queue="q")
    async def twice() -> None:
        ran.append(1)
        if len(ran) == 1:
            await asyncio.to_thread(query, dsn, PUT_BACK)
            await second.wait()  # the job's next attempt has run: end in the same batch
            raise pgqueue.Retry(3600)
        second.set()

    job_id = app.using("twice").enqueue(conn)
    conn.commit()
    # No listener: its start asks for a heartbeat, which would stop attempt 1 (lease lost).
    w = app.worker(queues={"q": 2}, poll_interval=0.05, ack_interval=0.5, listen=False)
    seen: list[str] = []
    w.events.listeners.append(lambda event: seen.append(event.state))
    calls = faulty_acks(w, {})
    done = "SELECT state, attempts FROM pgqueue.jobs"
    await run_worker_until(w, lambda: query(dsn, done) == [("succeeded", 2)], timeout=10)
    acks = [c.params["outcomes"] for c in calls if "outcomes" in (c.params or {})]
    assert len(json.loads(acks[0])) == 2  # one batch of the two
    lost = [r for r in caplog.records if getattr(r, "action", None) == "ack_lease_lost"]
    assert [(r.job_id, r.attempt) for r in lost] == [(job_id, 1)]
    assert seen == ["succeeded"]
    assert (w.stats.retried, w.stats.succeeded) == (0, 1)
    assert w._retrying == {}


async def test_stats_and_the_stopped_line_count_a_retry_apart_from_a_failure(
    dsn: str, conn: Any, caplog: Any
) -> None:
    """A task's Retry() is rescheduled, a failure to be retried is retried: in worker.stats and
    the worker_stopped line as in the summary and the metrics."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    app = snoozing_app(dsn)

    @app.task(name="fail", queue="q", retry=pgqueue.RetryPolicy(base=3600, cap=3600))
    async def fail() -> None:
        raise RuntimeError("boom")

    app.using("snooze").enqueue(conn)
    fail.enqueue(conn)
    conn.commit()
    w = app.worker(queues=["q"], poll_interval=0.05)
    await run_worker_until(w, lambda: query(dsn, SNOOZED) == [(2,)], timeout=10)
    assert (w.stats.retried, w.stats.rescheduled) == (1, 1)
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "worker_stopped"]
    assert "0 failed, 1 retried, 1 rescheduled, 0 cancelled" in line.getMessage()
