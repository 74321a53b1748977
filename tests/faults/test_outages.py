"""An outage of the database shorter than the lease: the worker keeps its jobs."""

from __future__ import annotations

import asyncio
from datetime import datetime

import psycopg
import pytest

import pgqueue
from pgqueue import _store
from tests.faults.proxy import Blackout
from tests.helpers import query

ROW = "SELECT state, attempts, worker_id, errors FROM pgqueue.jobs WHERE id = %s"
LEASE = "SELECT lease_expires_at FROM pgqueue.active_jobs WHERE id = %s AND state = 'running'"


async def _lease_moved(dsn: str, job_id: int, since: datetime | None) -> datetime:
    """The job's lease expiry once a heartbeat has moved it past ``since`` (or once it has one)."""
    for _ in range(1200):
        rows = query(dsn, LEASE, [job_id])
        if rows and (since is None or rows[0][0] > since):
            return rows[0][0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no heartbeat extended job {job_id}'s lease in 60 s")


async def _sweep_until(dsn: str, job_id: int, expiry: datetime) -> None:
    """Sweep for expired leases, as another worker would, every 0.1 s, until a heartbeat has
    moved the job's lease past ``expiry`` or the job is no longer running as it was."""
    for _ in range(1200):
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            _store.run(cur, _store.leases_rescue([]))
        rows = query(dsn, LEASE, [job_id])
        if not rows or rows[0][0] > expiry:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the job's lease neither moved nor expired in 120 s")


@pytest.mark.slow
async def test_an_outage_shorter_than_the_lease_keeps_the_workers_leases(
    dsn: str, conn: psycopg.Connection
) -> None:
    """The database is out of the worker's reach from just after a heartbeat until 4 s before
    its leases (20 s, heartbeat 2 s) expire. Once it is back, the heartbeat extends them in
    time, while another worker sweeps for expired leases. Its retries used to wait up to 10 s,
    and the one after the outage came after the leases had expired: the job was rescued,
    claimed again and run twice, an attempt counted, for an outage of 16 s."""
    app = pgqueue.PgQueue(dsn)
    release = asyncio.Event()

    @app.task(name="long", queue="q")
    async def long() -> None:
        await release.wait()

    job_id = app.using("long").enqueue(conn)
    conn.commit()
    async with Blackout(dsn) as proxy:
        w = app.worker(dsn=proxy.dsn, queues=["q"], lease=20, heartbeat=2, scheduler=False)
        runner = asyncio.create_task(w.run())
        try:
            claimed = await _lease_moved(dsn, job_id, None)
            expiry = await _lease_moved(dsn, job_id, claimed)  # just after a heartbeat
            proxy.black_out()
            until = "SELECT now() >= %s::timestamptz - interval '4 s'"
            while not query(dsn, until, [expiry])[0][0]:
                await asyncio.sleep(0.05)
            proxy.down = False
            await _sweep_until(dsn, job_id, expiry)
            assert query(dsn, ROW, [job_id]) == [("running", 1, w.name, [])]
        finally:
            release.set()
            w.stop()
            await asyncio.wait_for(runner, 60)
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE id = %s", [job_id]) == [
        ("succeeded", 1)
    ]
