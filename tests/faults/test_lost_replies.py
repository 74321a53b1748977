"""A write the server committed but whose reply was lost is written again on a new connection;
meanwhile the job may have been claimed again under the same attempt number (a Retry without
an error gives the attempt back). The write sent again must not apply to that new claim."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from pgqueue._store import Acked, Outcome
from pgqueue._worker._acker import Acker, Settled
from pgqueue._worker._db import Db
from tests.faults.proxy import ReplyCutter
from tests.helpers import query
from tests.integration import tasks_app as t

T = TypeVar("T")

ACK = b"jsonb_array_elements"  # in JOBS_ACK's text, and in no other statement a worker sends
ROW = "SELECT state, attempts, worker_id FROM pgqueue.jobs WHERE id = %s"


def run(dsn: str, q: _store.Query[T]) -> T:
    """Run one store query in its own autocommit connection."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        return _store.run(cur, q)


def claimed(dsn: str, conn: psycopg.Connection, worker: str) -> int:
    """A job of queue io, claimed by ``worker`` (attempt 1)."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    assert [r[0] for r in run(dsn, _store.jobs_claim(worker, {"io": 1}, 30)).rows] == [job_id]
    return job_id


async def sent(proxy: ReplyCutter, outcome: Outcome, settled: Settled) -> tuple[Db, Acker]:
    """w1's acker, through ``proxy``, after sending ``outcome`` in a statement that failed;
    what it settles goes to ``settled``."""
    db = Db(proxy.dsn, "acker")
    acker = Acker(db, 100, 0.01, settled, worker="w1")
    acker.add(outcome)
    proxy.armed = True
    with pytest.raises(psycopg.OperationalError):
        await acker.flush()
    assert proxy.cut.is_set() and acker.pending == 1
    return db, acker


async def snooze_sent(
    proxy: ReplyCutter, job_id: int, settled: list[set[tuple[int, int]]]
) -> tuple[Db, Acker]:
    """w1's acker, through ``proxy``, after sending job_id's snooze (a Retry without an error,
    which gives attempt 1 back) in a statement that failed; what it settles goes to
    ``settled``."""
    outcome = Outcome(job_id, 1, "queued")
    return await sent(proxy, outcome, lambda _, acked: settled.append(acked.applied()))


async def test_a_snooze_written_again_after_a_lost_reply_leaves_another_workers_claim(
    dsn: str, conn: psycopg.Connection
) -> None:
    """w1's Retry (no error: the attempt is given back) commits, its reply is lost; w2 claims
    the job, again as attempt 1. w1's acker writes the outcome again: w2's claim stays."""
    job_id = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        db, acker = await snooze_sent(proxy, job_id, settled)
        assert query(dsn, ROW, [job_id]) == [("queued", 0, None)]  # it did commit
        assert [r[0] for r in run(dsn, _store.jobs_claim("w2", {"io": 1}, 30)).rows] == [job_id]
        await acker.flush()  # the outcome, written again
        await db.close()
    assert acker.pending == 0
    assert query(dsn, ROW, [job_id]) == [("running", 1, "w2")]
    assert settled == [{(job_id, 1)}]  # reported as written: it was


async def test_a_snooze_whose_statement_never_reached_the_server_is_written_again(
    dsn: str, conn: psycopg.Connection
) -> None:
    """The connection fails before the server gets the statement: nothing was written, and the
    job is still w1's claim. Written again, the snooze puts the job back, the attempt given back."""
    job_id = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        proxy.deliver = False
        db, acker = await snooze_sent(proxy, job_id, settled)
        assert query(dsn, ROW, [job_id]) == [("running", 1, "w1")]  # it did not commit
        await acker.flush()
        await db.close()
    assert acker.pending == 0
    assert query(dsn, ROW, [job_id]) == [("queued", 0, None)]
    assert settled == [{(job_id, 1)}]


async def test_a_snooze_written_again_after_a_lost_reply_leaves_the_workers_own_new_claim(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A worker's task raises Retry(): the ack commits, its reply is lost. The worker's own
    claimer takes the job again, as attempt 1, and runs it; only then can the acker reconnect.
    Writing the snooze again must not put back the job this worker runs now: it would run a
    third time (here after the second had ended), or twice at once."""
    app = pgqueue.PgQueue(dsn)
    runs: list[int] = []
    second = asyncio.Event()
    release = asyncio.Event()

    @app.task(name="snooze_once", queue="q")
    async def snooze_once() -> None:
        runs.append(pgqueue.current_job().attempt)
        if len(runs) == 1:
            raise pgqueue.Retry()
        if len(runs) == 2:
            second.set()
            await release.wait()

    job_id = app.using("snooze_once").enqueue(conn)
    conn.commit()
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        proxy.armed = True
        proxy.gate.clear()  # the acker reconnects once the job runs again
        w = app.worker(dsn=proxy.dsn, queues=["q"], poll_interval=0.05, scheduler=False)
        runner = asyncio.create_task(w.run())
        try:
            await asyncio.wait_for(proxy.cut.wait(), 10)
            await asyncio.wait_for(second.wait(), 10)
            assert query(dsn, ROW, [job_id]) == [("running", 1, w.name)]
            proxy.gate.set()
            while w._acker.pending:
                await asyncio.sleep(0.01)
            release.set()
            done = "SELECT state, attempts FROM pgqueue.finished_jobs WHERE id = %s"
            while not query(dsn, done, [job_id]):
                await asyncio.sleep(0.01)
        finally:
            release.set()
            w.stop()
            await asyncio.wait_for(runner, 30)
    assert runs == [1, 1]
    assert query(dsn, done, [job_id]) == [("succeeded", 1)]


@pytest.mark.parametrize(("state", "ended"), [("succeeded", ("succeeded", 1, "w1")),
                                              ("queued", ("queued", 0, None))])  # fmt: skip
async def test_a_batch_written_again_that_fails_again_keeps_every_outcome(
    dsn: str, conn: psycopg.Connection, state: str, ended: tuple[object, ...]
) -> None:
    """The snooze's statement fails; another job's success (or snooze) joins it. Written
    again, the connection fails once more before the write reaches the server: both outcomes
    are kept, in their order, and the next try writes both. The other outcome, never sent,
    is not doubtful: its job is still w1's claim, whose lease the heartbeats keep (a snooze
    put back as doubtful was left out of Acker.holding())."""
    job_id = claimed(dsn, conn, "w1")
    other = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        proxy.deliver = False
        db, acker = await snooze_sent(proxy, job_id, settled)
        acker.add(Outcome(other, 1, state))
        proxy.armed = True
        with pytest.raises(psycopg.OperationalError):
            await acker.flush()
        assert acker.pending == 2 and settled == []
        assert acker.holding() == [(other, 1)]
        await acker.flush()
        await db.close()
    assert query(dsn, ROW, [job_id]) == [("queued", 0, None)]
    assert query(dsn, ROW, [other]) == [ended]
    assert set().union(*settled) == {(job_id, 1), (other, 1)}


async def test_two_snoozes_of_one_attempt_are_each_reported_once(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A task raises Retry(): the ack commits, its reply is lost. The worker claims the job
    again, as attempt 1, and the task raises Retry() once more before the acker reconnects:
    two outcomes of (job, 1) wait. Both were retries, and each is reported once: the second's
    report does not take the first's place."""
    app = pgqueue.PgQueue(dsn)
    runs: list[int] = []
    reported: list[str] = []
    third = asyncio.Event()

    @app.task(name="snooze_twice", queue="q")
    async def snooze_twice() -> None:
        runs.append(pgqueue.current_job().attempt)
        if len(runs) <= 2:
            raise pgqueue.Retry()
        third.set()

    app.using("snooze_twice").enqueue(conn)
    conn.commit()
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        proxy.armed = True
        proxy.gate.clear()  # the acker reconnects once the second snooze waits behind
        w = app.worker(dsn=proxy.dsn, queues=["q"], poll_interval=0.05, scheduler=False)
        w.events.listeners.append(lambda event: reported.append(event.state))
        runner = asyncio.create_task(w.run())
        try:
            await asyncio.wait_for(proxy.cut.wait(), 10)
            while w._acker.pending < 2:
                await asyncio.sleep(0.01)
            proxy.gate.set()
            await asyncio.wait_for(third.wait(), 10)
        finally:
            proxy.gate.set()
            w.stop()
            await asyncio.wait_for(runner, 30)
    assert runs == [1, 1, 1]
    assert reported == ["retrying", "retrying", "succeeded"]
    assert (w.stats.rescheduled, w.stats.retried, w.stats.succeeded) == (2, 0, 1)


async def test_a_snooze_that_ended_its_job_cancelled_is_reported_cancelled_once_written_again(
    dsn: str, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """w1's Retry of a job asked to cancel commits, its reply lost: the job is cancelled (it
    left active_jobs). Written again, the outcome is reported as written and cancelled, as the
    first statement would have reported it, not as an outcome whose lease was lost."""
    job_id = claimed(dsn, conn, "w1")
    assert query(dsn, "SELECT pgqueue.cancel(%s)", [job_id]) == [("requested",)]
    settled: list[Acked] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        outcome = Outcome(job_id, 1, "queued")
        db, acker = await sent(proxy, outcome, lambda _, acked: settled.append(acked))
        assert query(dsn, ROW, [job_id]) == [("cancelled", 0, "w1")]  # it did commit
        await acker.flush()
        await db.close()
    assert acker.pending == 0
    assert [(a.applied(), a.cancelled) for a in settled] == [({(job_id, 1)}, [job_id])]
    assert "ack_lease_lost" not in [getattr(r, "action", None) for r in caplog.records]


async def test_a_snooze_written_again_after_another_worker_ended_the_job_is_reported_written(
    dsn: str, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """w1's snooze commits, its reply lost; w2 claims the job (attempt 1 again) and ends it
    before w1's acker reconnects. Written again, w1's outcome is reported as written, as it
    was, and not as an outcome whose lease was lost."""
    job_id = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        db, acker = await snooze_sent(proxy, job_id, settled)
        assert [r[0] for r in run(dsn, _store.jobs_claim("w2", {"io": 1}, 30)).rows] == [job_id]
        assert run(dsn, _store.jobs_ack([Outcome(job_id, 1, "succeeded")])).ids == [job_id]
        await acker.flush()
        await db.close()
    assert acker.pending == 0
    assert query(dsn, ROW, [job_id]) == [("succeeded", 1, "w2")]
    assert settled == [{(job_id, 1)}]
    assert "ack_lease_lost" not in [getattr(r, "action", None) for r in caplog.records]


async def test_a_snooze_written_again_opens_one_connection_beside_a_heartbeat(
    dsn: str, conn: psycopg.Connection
) -> None:
    """The acker's connection is gone after the failed statement. Writing the snooze again
    waits for a new one while a heartbeat, on the same connection, opens one too: one
    connection is opened (another, left unclosed, was not closed with the acker's)."""
    job_id = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        proxy.deliver = False
        db, acker = await snooze_sent(proxy, job_id, settled)
        assert proxy.accepted == 1
        await asyncio.gather(acker.flush(), db.run(_store.ping()))
        await db.close()
        assert proxy.accepted == 2
    assert query(dsn, ROW, [job_id]) == [("queued", 0, None)]
    assert settled == [{(job_id, 1)}]


async def test_a_snooze_written_again_that_the_database_refuses_fails_its_job(
    dsn: str, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The statement of a snooze the database cannot hold (a delay past what a timestamp
    holds) fails on the way to the server; a success joins it. Written again, the snooze is
    refused: its job fails with the reason, the success is written, and nothing is left to
    write (the refused batch was tried again forever, every later outcome behind it)."""
    job_id = claimed(dsn, conn, "w1")
    other = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        proxy.deliver = False
        outcome = Outcome(job_id, 1, "queued", delay=1e300)
        db, acker = await sent(proxy, outcome, lambda _, acked: settled.append(acked.applied()))
        acker.add(Outcome(other, 1, "succeeded"))
        await acker.flush()
        await db.close()
    assert acker.pending == 0
    assert query(dsn, ROW, [job_id]) == [("failed", 1, "w1")]
    assert query(dsn, ROW, [other]) == [("succeeded", 1, "w1")]
    assert set().union(*settled) == {(job_id, 1), (other, 1)}
    assert "ack_refused" in [getattr(r, "action", None) for r in caplog.records]


async def test_a_success_written_again_after_a_lost_reply_is_reported_written(
    dsn: str, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A success's statement commits, its reply lost. Written again, the fence finds the job
    gone: it is reported as written, as it was, not as an outcome whose lease was lost (that
    took it out of worker.stats and said the job would run again)."""
    job_id = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        outcome = Outcome(job_id, 1, "succeeded")
        db, acker = await sent(proxy, outcome, lambda _, acked: settled.append(acked.applied()))
        assert query(dsn, ROW, [job_id]) == [("succeeded", 1, "w1")]  # it did commit
        await acker.flush()
        await db.close()
    assert acker.pending == 0
    assert settled == [{(job_id, 1)}]
    assert "ack_lease_lost" not in [getattr(r, "action", None) for r in caplog.records]


async def test_a_stop_whose_last_write_lost_its_reply_finds_the_outcome_written(
    dsn: str, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The stop's last write commits a job's success, its reply lost. The stop tries once more,
    on a new connection, and finds it written: run() ends as usual, the success counted. It
    raised PgQueueError saying the outcome was left unwritten, its job to run again, and took
    it out of worker.stats, while the job had succeeded."""
    job_id = t.add.enqueue(conn, 1, 2)
    conn.commit()
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        # The acker waits far longer than the test: the stop writes the outcome.
        w = t.app.worker(dsn=proxy.dsn, queues=["io"], scheduler=False, ack_interval=25)
        runner = asyncio.create_task(w.run())
        while not w._acker.pending:
            await asyncio.sleep(0.01)
        proxy.armed = True
        w.stop()
        await asyncio.wait_for(runner, 30)
        assert proxy.cut.is_set()
    assert query(dsn, ROW, [job_id]) == [("succeeded", 1, w.name)]
    assert w.stats.succeeded == 1
    assert "outcome_unwritten" not in [getattr(r, "action", None) for r in caplog.records]


async def test_a_failure_recording_a_refused_outcome_whose_reply_is_lost_is_found_written(
    dsn: str, conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses a snooze (a delay past what a timestamp holds); the failure written
    in its place commits, its reply lost. Written again, that failure is found written: the
    job failed as recorded. It was the snooze that was put back, which no row check finds
    written (the job failed, not queued): reported as a lease lost and discarded, the refusal
    never reported, while the job had failed as recorded."""
    job_id = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    refused: list[tuple[Outcome, Outcome | None]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        db = Db(proxy.dsn, "acker")
        acker = Acker(
            db, 100, 0.01, lambda _, acked: settled.append(acked.applied()),
            lambda o, w: refused.append((o, w)), worker="w1",
        )  # fmt: skip
        acks = 0
        ack = acker._ack

        async def ack_then_arm(outcomes: list[Outcome]) -> Acked:
            nonlocal acks
            acks += 1
            try:
                return await ack(outcomes)
            finally:
                proxy.armed = acks == 2  # the batch, then the snooze alone: both refused

        acker._ack = ack_then_arm  # type: ignore[method-assign]
        snooze = Outcome(job_id, 1, "queued", delay=1e300)
        acker.add(snooze)
        with pytest.raises(psycopg.OperationalError):
            await acker.flush()
        assert proxy.cut.is_set() and acks == 2
        assert query(dsn, ROW, [job_id]) == [("failed", 1, "w1")]  # the failure did commit
        await acker.flush()
        await db.close()
    assert acker.pending == 0
    assert set().union(*settled) == {(job_id, 1)}
    assert [(o, w is not None and w.state) for o, w in refused] == [(snooze, "failed")]
    assert "ack_lease_lost" not in [getattr(r, "action", None) for r in caplog.records]


def test_a_failure_kept_for_a_refused_retry_and_found_unwritten_forgets_the_retry(
    dsn: str,
) -> None:
    """A refused retry's failure is kept after its reply was lost (refused was told of it);
    written again, it is found unwritten (the lease passed on). The retry, never reported,
    leaves Worker._retrying, and worker.stats counts no failure less than it counted."""
    w = t.app.worker(dsn=dsn, queues=["io"], scheduler=False)
    retry = Outcome(7, 1, "queued", error="boom")
    failure = Outcome(7, 1, "failed", error="pgqueue could not store this attempt's outcome")
    w._retrying[7, 1] = [(None, 0.0, 0.0)]  # type: ignore[list-item]
    w._refused(retry, failure)
    w._settled([failure], Acked([], [], []))
    assert w._retrying == {}
    assert w.stats.failed == 0


async def test_a_snooze_behind_a_doubtful_snooze_of_its_attempt_keeps_its_lease(
    dsn: str, conn: psycopg.Connection
) -> None:
    """w1's snooze commits, its reply lost; w1 claims the job again (attempt 1 again) and
    snoozes it again, before its acker reconnects. That second snooze was never sent: the job
    is w1's claim, whose lease the heartbeats keep. The key it shares with the doubtful snooze
    left it out of Acker.holding(): its lease could expire, the rescue then counting an
    attempt the snooze gives back (or failing the job as worker lost at its last attempt)."""
    job_id = claimed(dsn, conn, "w1")
    settled: list[set[tuple[int, int]]] = []
    async with ReplyCutter(dsn, ACK, b"pgqueue acker") as proxy:
        db, acker = await snooze_sent(proxy, job_id, settled)
        assert [r[0] for r in run(dsn, _store.jobs_claim("w1", {"io": 1}, 30)).rows] == [job_id]
        acker.add(Outcome(job_id, 1, "queued"))
        assert acker.holding() == [(job_id, 1)]
        await db.close()
