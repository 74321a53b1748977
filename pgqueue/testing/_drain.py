"""``drain``: run every queued job now, with a real worker, and return what happened."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg

from pgqueue import _store
from pgqueue._app import PgQueue

OUTCOMES = ("succeeded", "failed", "retried", "cancelled")


async def _prepare(dsn: str, with_scheduled: bool) -> list[str]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with conn, conn.cursor() as cur:
        if with_scheduled:
            await _store.arun(cur, _store.jobs_run_now())
        return await _store.arun(cur, _store.jobs_queues_waiting())


async def adrain(
    app: PgQueue,
    *,
    dsn: str | None = None,
    queues: Sequence[str] | None = None,
    with_scheduled: bool = True,
    max_rounds: int = 20,
) -> dict[str, int]:
    """Async twin of :func:`drain`."""
    dsn = dsn or app.dsn
    totals = dict.fromkeys(OUTCOMES, 0)
    for _ in range(max_rounds):
        waiting = await _prepare(dsn, with_scheduled)
        if queues is not None:
            waiting = [q for q in waiting if q in queues]
        if not waiting:
            break
        worker = app.worker(queues=waiting, dsn=dsn, burst=True, listen=False, poll_interval=0.01)
        await worker.run()
        for outcome in OUTCOMES:
            totals[outcome] += getattr(worker.stats, outcome)
        if not with_scheduled:
            break
    return totals


def drain(
    app: PgQueue,
    *,
    dsn: str | None = None,
    queues: Sequence[str] | None = None,
    with_scheduled: bool = True,
    max_rounds: int = 20,
) -> dict[str, int]:
    """Run every committed queued job of ``app`` (all queues, or ``queues``) until none is left.

    With ``with_scheduled``, jobs scheduled for later, and retries waiting out their backoff,
    run now too; each round is a burst worker, at most ``max_rounds`` of them (a task that
    keeps retrying stays queued). Returns counts of ``succeeded``, ``failed``, ``retried``
    and ``cancelled`` attempts. Call :func:`adrain` from async code.
    """
    return asyncio.run(
        adrain(app, dsn=dsn, queues=queues, with_scheduled=with_scheduled, max_rounds=max_rounds)
    )
