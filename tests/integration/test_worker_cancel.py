"""run() cancelled from outside (asyncio.timeout, asyncio.run's first Ctrl-C, a TaskGroup) at
the awaits where the worker holds claims the database has committed: the jobs go back at the
stop, as the jobs it runs do, and are not left running until their leases expire."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from pgqueue import _store
from tests.helpers import query
from tests.integration import tasks_app as t

GUARD = 60  # seconds a worker that should stop by itself gets: only a failing test waits it


async def test_a_claim_whose_reply_a_cancellation_cut_off_gives_its_jobs_back_at_the_stop(
    dsn: str, conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """run() cancelled while a claim runs: psycopg asks the server to cancel the statement,
    which has often committed by then, and raises CancelledError all the same, the claimed
    rows unread. Those jobs stayed running under the stopped worker until their leases
    expired, then ran again with that attempt counted (or failed as 'worker lost' when it was
    their last). The stop now gives them back, attempt not counted, as it does the jobs it
    stopped."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    ids = [t.add.enqueue(conn, n, n) for n in range(3)]
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05, lease=3600)
    running = asyncio.ensure_future(worker.run())
    claim_db = worker._claim_db
    original = claim_db.run

    async def cut_off(query_: Any) -> Any:
        result = await original(query_)
        if isinstance(result, _store.Claim) and result.rows:
            running.cancel()  # lands as the reply comes in: the claim has committed
            await asyncio.sleep(0)
        return result

    claim_db.run = cut_off  # type: ignore[method-assign]
    await asyncio.wait([running], timeout=GUARD)
    assert running.cancelled()
    assert query(dsn, "SELECT state, attempts, worker_id FROM pgqueue.jobs WHERE id = ANY(%s)"
                      " GROUP BY 1, 2, 3", [ids]) == [("queued", 0, None)]  # fmt: skip
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []
