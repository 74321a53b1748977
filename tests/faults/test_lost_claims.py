"""A claim that commits while its connection breaks leases its jobs to a worker that never
learns of them: they are given back, the attempt not counted, once the worker claims again
(or at its stop), but for the jobs whose outcomes the worker has just written: a server crash
can lose such an outcome (acks skip the WAL flush), and those are left to their leases."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from pgqueue._store import Acked, Outcome
from pgqueue._worker._acker import Acker
from tests.faults.proxy import ReplyCutter
from tests.helpers import query

CLAIM = b"SET state = 'running'"  # in every claim statement, and in no other the claimer sends
ROW = "SELECT state, attempts, worker_id FROM pgqueue.jobs WHERE id = %s"
DONE = "SELECT state, attempts, last_error FROM pgqueue.finished_jobs WHERE id = %s"
# What a server crash that lost an ack of job %(id)s leaves: the row as its claim left it.
ACK_LOST = """
UPDATE pgqueue.active_jobs
   SET state = 'running', worker_id = %(worker)s, started_at = '2000-01-01',
       lease_expires_at = now() + interval '60 seconds'
 WHERE id = %(id)s
"""
# A job leased to the worker, its lease expired, as its claim (or a lost ack) left it.
EXPIRED = """
UPDATE pgqueue.active_jobs
   SET state = 'running', attempts = 1, worker_id = %(worker)s, started_at = now(),
       lease_expires_at = now() - interval '1 second'
 WHERE id = %(id)s
"""


async def _until(dsn: str, sql: str, params: list[object], tries: int = 600) -> None:
    """Wait until ``sql`` returns a row (up to tries times 0.05 s)."""
    for _ in range(tries):
        if query(dsn, sql, params):
            return
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _worker(app: pgqueue.PgQueue, dsn: str, **options: Any) -> AsyncIterator[Any]:
    """A worker of queue q running through a ReplyCutter of its claims (the proxy, the
    worker), stopped at the end; its claims are never prepared, so each sends its text."""
    async with ReplyCutter(dsn, CLAIM, b"pgqueue claimer") as proxy:
        w = app.worker(dsn=proxy.dsn, queues=["q"], lease=60, poll_interval=0.05,
                       scheduler=False, **options)  # fmt: skip
        w._claim_db.prepare_threshold = None
        runner = asyncio.create_task(w.run())
        try:
            yield proxy, w
        finally:
            w.stop()
            await asyncio.wait_for(runner, 30)


async def _lose_a_claim(app: pgqueue.PgQueue, dsn: str, conn: psycopg.Connection,
                        proxy: ReplyCutter) -> int:  # fmt: skip
    """Enqueue a job of task "once" whose claim's reply ``proxy`` loses; wait for its end."""
    proxy.armed = True
    lost: int = app.using("once").enqueue(conn)
    conn.commit()
    await asyncio.wait_for(proxy.cut.wait(), 10)
    await _until(dsn, DONE, [lost])
    return lost


async def test_a_claim_whose_reply_was_lost_gives_its_jobs_back_once_claims_work_again(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A claim commits, its reply lost with the connection. Its job, leased to the worker,
    runs nowhere: the worker gives it back once it claims again, the attempt not counted, and
    the job runs at once, attempt 1. It waited for its lease to expire, and was rescued as
    'worker lost': a job of one attempt failed so without ever running."""
    app = pgqueue.PgQueue(dsn)
    runs: list[int] = []

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        runs.append(pgqueue.current_job().attempt)

    job_id = app.using("once").enqueue(conn)
    conn.commit()
    async with ReplyCutter(dsn, CLAIM, b"pgqueue claimer") as proxy:
        proxy.armed = True
        w = app.worker(dsn=proxy.dsn, queues=["q"], lease=3, rescue_interval=0.5,
                       poll_interval=0.05, scheduler=False)  # fmt: skip
        runner = asyncio.create_task(w.run())
        try:
            await asyncio.wait_for(proxy.cut.wait(), 10)
            assert query(dsn, ROW, [job_id]) == [("running", 1, w.name)]  # it did commit
            await _until(dsn, DONE, [job_id])
        finally:
            w.stop()
            await asyncio.wait_for(runner, 30)
    assert query(dsn, DONE, [job_id]) == [("succeeded", 1, None)]
    assert runs == [1]


async def test_a_claim_whose_reply_was_lost_just_before_the_stop_gives_its_jobs_back(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A claim commits, its reply lost with the connection, and the worker is stopped before
    it claims again: the stop gives the job back, the attempt not counted. It stayed running,
    leased to the stopped worker, until its lease expired."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        pass

    job_id = app.using("once").enqueue(conn)
    conn.commit()
    async with ReplyCutter(dsn, CLAIM, b"pgqueue claimer") as proxy:
        proxy.armed = True
        proxy.gate.clear()  # the claimer cannot reconnect, to claim again, before the stop
        w = app.worker(dsn=proxy.dsn, queues=["q"], lease=60, poll_interval=0.05,
                       scheduler=False)  # fmt: skip
        runner = asyncio.create_task(w.run())
        try:
            await asyncio.wait_for(proxy.cut.wait(), 10)
            assert query(dsn, ROW, [job_id]) == [("running", 1, w.name)]  # it did commit
        finally:
            w.stop()
            proxy.gate.set()
            await asyncio.wait_for(runner, 30)
    assert query(dsn, ROW, [job_id]) == [("queued", 0, None)]


async def test_a_job_whose_outcome_was_just_written_is_not_given_back(
    dsn: str, conn: psycopg.Connection
) -> None:
    """The worker writes a job's outcome (a retry, attempt 1); a server crash loses that
    write (acks skip the WAL flush), and the job is running again, leased to the worker, which
    no longer holds it, as a lost claim's job is. A claim's reply is lost next: its job is
    given back and runs, but the job whose outcome was just written is not. Given back, it
    ran attempt 1 a second time, the attempt uncounted: a job that crashes the server could
    run forever. It is left to its lease, which counts the attempt."""
    app = pgqueue.PgQueue(dsn)
    runs: list[tuple[str, int]] = []

    @app.task(name="fails", queue="q", max_attempts=3,
              retry=pgqueue.RetryPolicy(base=3600, jitter=False))  # fmt: skip
    async def fails() -> None:
        runs.append(("fails", pgqueue.current_job().attempt))
        raise RuntimeError("planned")

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        runs.append(("once", pgqueue.current_job().attempt))

    written = app.using("fails").enqueue(conn)
    conn.commit()
    async with _worker(app, dsn) as (proxy, w):
        await _until(dsn, ROW + " AND state = 'queued' AND attempts = 1", [written])
        query(dsn, ACK_LOST, {"worker": w.name, "id": written})
        lost = await _lose_a_claim(app, dsn, conn, proxy)
    assert query(dsn, DONE, [lost]) == [("succeeded", 1, None)]
    started = "SELECT state, attempts, worker_id, started_at::date::text FROM pgqueue.jobs"
    assert query(dsn, started + " WHERE id = %s", [written]) == [
        ("running", 1, w.name, "2000-01-01")
    ]  # as the crash left it: not given back (nor claimed again)
    assert runs == [("fails", 1), ("once", 1)]


async def test_a_job_whose_retry_was_just_written_is_given_back(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A job raises Retry(), which gives its attempt back, and is leased to the worker again
    under that attempt, unknown to it: a claim of it whose reply was lost, or a crash that
    lost the Retry. Either way it has not run again: given back, it runs at once. The record
    of written outcomes took it for a crash's lost ack and left it to its lease, whose rescue
    failed it as 'worker lost' (its one attempt counted) without its second run."""
    app = pgqueue.PgQueue(dsn)
    runs: list[tuple[str, int]] = []

    @app.task(name="again", queue="q", max_attempts=1)
    async def again() -> None:
        runs.append(("again", pgqueue.current_job().attempt))
        if len(runs) == 1:
            raise pgqueue.Retry(3600)

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        runs.append(("once", pgqueue.current_job().attempt))

    retried = app.using("again").enqueue(conn)
    conn.commit()
    async with _worker(app, dsn) as (proxy, w):
        await _until(dsn, ROW + " AND run_at > now() + interval '1 minute'", [retried])
        query(dsn, ACK_LOST.replace("SET state", "SET attempts = 1, state"),
              {"worker": w.name, "id": retried})  # fmt: skip
        lost = await _lose_a_claim(app, dsn, conn, proxy)
        await _until(dsn, DONE, [retried])
    assert query(dsn, DONE, [lost]) == [("succeeded", 1, None)]
    assert query(dsn, DONE, [retried]) == [("succeeded", 1, None)]
    assert sorted(runs) == [("again", 1), ("again", 1), ("once", 1)]


async def test_a_job_whose_lease_expired_is_not_given_back(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A job leased to the worker, unknown to it, whose lease has expired, is the rescue's
    (which counts the attempt), not the give-back's: the record of the outcomes the worker
    wrote outlasts only unexpired leases (one whose outcome a server crash lost is leased to
    the worker again only until then), so an expired one may be a written outcome's."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        pass

    async with _worker(app, dsn, rescue_interval=3600) as (proxy, w):
        registered = "SELECT 1 FROM pgqueue.worker_processes WHERE id = %s"
        await _until(dsn, registered, [w.name])  # its start's rescue is over
        expired = app.using("once").enqueue(conn)
        conn.execute(EXPIRED, {"worker": w.name, "id": expired})
        conn.commit()
        lost = await _lose_a_claim(app, dsn, conn, proxy)
    assert query(dsn, DONE, [lost]) == [("succeeded", 1, None)]
    assert query(dsn, ROW, [expired]) == [("running", 1, w.name)]


WAITING_CLAIMERS = """
SELECT pid FROM pg_stat_activity
 WHERE application_name = 'pgqueue claimer' AND wait_event_type = 'Lock' AND pid <> %s
"""


async def _claimer_waiting(dsn: str, besides: int = 0) -> int:
    """The pid of a claimer session that waits for a lock, other than ``besides``."""
    for _ in range(600):
        if rows := query(dsn, WAITING_CLAIMERS, [besides]):
            return int(rows[0][0])
        await asyncio.sleep(0.05)
    raise AssertionError("no claim waited for the table's lock in 30 s")


async def _break_a_waiting_claim(
    app: pgqueue.PgQueue, dsn: str, proxy: ReplyCutter, locker: psycopg.Connection
) -> tuple[int, int]:
    """Enqueue a job of task "once" on ``locker``, which locks the jobs' table first, and
    break the connection of the claim that waits for that lock (the server runs it on):
    returns the job's id and the pid of the claim's server session."""
    proxy.wait = False
    locker.execute("LOCK TABLE pgqueue.active_jobs IN EXCLUSIVE MODE")
    job_id: int = app.using("once").enqueue(locker)  # seen once the lock is let go
    proxy.armed = True
    await asyncio.wait_for(proxy.cut.wait(), 10)
    return job_id, await _claimer_waiting(dsn)


async def _refused(proxy: ReplyCutter, count: int) -> None:
    """Until ``proxy`` has refused ``count`` connections."""
    for _ in range(600):
        if proxy.refused >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{proxy.refused} connections refused in 30 s, not {count}")


@pytest.mark.parametrize("refusals", [0, 2])
async def test_a_claim_the_server_still_runs_when_its_connection_broke_never_commits(
    dsn: str, conn: psycopg.Connection, refusals: int
) -> None:
    """A claim waits on the server (for a lock the test holds) when its connection breaks;
    the server, unaware that its client is gone, runs it on. The worker read which jobs were
    leased to it, found none, and claimed again; the old claim committed after that read, and
    its job waited for its lease (a minute here), leased to a worker that never ran it.
    The worker now ends the broken connection's session, and waits until it is gone, before
    that read: the old claim never commits, and the job runs at the next claim. With
    ``refusals``, the claimer's first reconnects fail (the database out of reach), and its
    give-back is tried again: the first try forgot the session before it failed, so the one
    that worked ended nothing. The session is forgotten only once it is known to be gone."""
    app = pgqueue.PgQueue(dsn)
    runs: list[int] = []

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        runs.append(pgqueue.current_job().attempt)

    async with _worker(app, dsn) as (proxy, w):
        registered = "SELECT 1 FROM pgqueue.worker_processes WHERE id = %s"
        await _until(dsn, registered, [w.name])  # its start's rescue is over
        proxy.gate.clear()  # the claimer reconnects once the test has seen the claim wait
        proxy.refusing = refusals > 0
        with psycopg.connect(dsn) as locker:
            job_id, broken = await _break_a_waiting_claim(app, dsn, proxy, locker)
            await _refused(proxy, refusals)  # as many give-backs failed to connect
            proxy.refusing = False
            proxy.gate.set()
            await _claimer_waiting(dsn, besides=broken)  # the next claim: the read is over
            alive = query(dsn, "SELECT pid FROM pg_stat_activity WHERE pid = %s", [broken])
            locker.commit()
        await _until(dsn, DONE, [job_id])
    assert alive == []
    assert query(dsn, DONE, [job_id]) == [("succeeded", 1, None)]
    assert runs == [1]


async def test_a_claim_that_failed_on_a_connection_that_held_gives_nothing_back(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A claim fails but its connection holds (cancelled, as a statement or lock timeout
    cancels it): it rolled back, and leased nothing. A job leased to the worker that it does
    not know (as a crash that lost its outcome leaves it) is not given back, and no read of
    the worker's leases, with its outcome writes paused, runs before the next claim. Any
    OperationalError was taken for a lost reply: each claim a timeout failed cost a give-back,
    which gave such a job back, its attempt run again uncounted."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        pass

    async with _worker(app, dsn) as (_proxy, w):
        registered = "SELECT 1 FROM pgqueue.worker_processes WHERE id = %s"
        await _until(dsn, registered, [w.name])  # its start's rescue is over
        leased = app.using("once").enqueue(conn)
        conn.execute(ACK_LOST.replace("SET state", "SET attempts = 1, state"),
                     {"worker": w.name, "id": leased})  # fmt: skip
        conn.commit()
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE pgqueue.active_jobs IN EXCLUSIVE MODE")
            job_id = app.using("once").enqueue(locker)
            query(dsn, "SELECT pg_cancel_backend(%s)", [await _claimer_waiting(dsn)])
            await _claimer_waiting(dsn)  # the next claim
            locker.commit()
        await _until(dsn, DONE, [job_id])
    assert query(dsn, DONE, [job_id]) == [("succeeded", 1, None)]
    assert query(dsn, ROW, [leased]) == [("running", 1, w.name)]


async def test_a_stop_ends_a_broken_claims_session_while_the_claimer_cannot_reconnect(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A claim waits on the server when its connection breaks, and the worker is stopped
    while new connections fail (an existing one still works): the stop ends that claim's
    session on a connection it holds. It ended it on the claimer's, which it had to open
    again: the stop failed, leaving its jobs to their leases, and the old claim, committed
    after the stop, leased its job to a worker that was gone."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="once", queue="q", max_attempts=1)
    async def once() -> None:
        pass

    async with ReplyCutter(dsn, CLAIM, b"pgqueue claimer") as proxy:
        w = app.worker(dsn=proxy.dsn, queues=["q"], lease=60, poll_interval=0.05,
                       scheduler=False)  # fmt: skip
        w._claim_db.prepare_threshold = None
        runner = asyncio.create_task(w.run())
        try:
            registered = "SELECT 1 FROM pgqueue.worker_processes WHERE id = %s"
            await _until(dsn, registered, [w.name])  # its start's rescue is over
            proxy.refusing = True
            with psycopg.connect(dsn) as locker:
                job_id, broken = await _break_a_waiting_claim(app, dsn, proxy, locker)
                await _refused(proxy, 1)  # the give-back failed to connect
                w.stop()
                await asyncio.wait_for(runner, 30)
                alive = query(dsn, "SELECT pid FROM pg_stat_activity WHERE pid = %s", [broken])
                locker.commit()
        finally:
            w.stop()
            proxy.refusing = False
            await asyncio.wait_for(runner, 30)
    assert alive == []
    assert query(dsn, ROW, [job_id]) == [("queued", 0, None)]
    assert query(dsn, "SELECT count(*) FROM pgqueue.worker_processes") == [(0,)]


class _Written:
    """A stand-in for the acker's connection: every outcome sent is written."""

    async def run(self, query: _store.Query[Acked]) -> Acked:
        rows = json.loads(query.params["outcomes"])
        return Acked([r[0] for r in rows], [], [r[1] for r in rows])


async def test_the_acker_remembers_written_outcomes_for_as_long_as_it_is_told() -> None:
    """The claims of written outcomes are known for ``remember`` seconds, and then forgotten
    as later batches are written: the record holds no more than that."""
    kept = Acker(_Written(), 100, 0.01, worker="w1", remember=60.0)  # type: ignore[arg-type]
    short = Acker(_Written(), 100, 0.01, worker="w1", remember=0.0)  # type: ignore[arg-type]
    for acker in (kept, short):
        for job_id in (1, 2):
            acker.add(Outcome(job_id, 1, "succeeded"))
            await acker.flush()
            await asyncio.sleep(0.01)  # the next batch is written later, on any clock
        acker.add(Outcome(3, 1, "succeeded"))  # waiting: known too
    asked = [(1, 1), (2, 1), (3, 1), (4, 1), (1, 2)]
    assert kept.known(asked) == {(1, 1), (2, 1), (3, 1)}
    assert short.known(asked) == {(2, 1), (3, 1)}
