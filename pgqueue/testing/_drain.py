"""``drain``: run every queued job now, with a real worker, and return what happened."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import psycopg

from pgqueue import _store
from pgqueue._app import PgQueue
from pgqueue._errors import SchemaError
from pgqueue._options import check_count, check_queue
from pgqueue._schema import aschema_state, schema_problem

OUTCOMES = ("succeeded", "failed", "retried", "cancelled")


def _queue_names(queues: Sequence[str] | str | None) -> list[str] | None:
    """``queues`` as valid queue names; a string is split at commas, as a worker's is."""
    if queues is None:
        return None
    names = queues.split(",") if isinstance(queues, str) else list(queues)
    return [check_queue(name.strip() if isinstance(name, str) else name) for name in names]


def _check_rounds(max_rounds: int) -> None:
    check_count(max_rounds, "max_rounds", 1)


async def _prepare(dsn: str, queues: list[str] | None, with_scheduled: bool) -> list[str]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with conn, conn.cursor() as cur:
        problem = schema_problem(*await aschema_state(lambda query: _store.arun(cur, query)))
        if problem:
            raise SchemaError(problem)
        if with_scheduled:
            await _store.arun(cur, _store.jobs_run_now(queues))
        waiting = await _store.arun(cur, _store.jobs_queues_waiting())
    return waiting if queues is None else [q for q in waiting if q in queues]


async def adrain(
    app: PgQueue,
    *,
    dsn: str | None = None,
    queues: Sequence[str] | None = None,
    with_scheduled: bool = True,
    max_rounds: int = 20,
) -> dict[str, int]:
    """Async twin of :func:`drain`."""
    names = _queue_names(queues)
    _check_rounds(max_rounds)
    dsn = dsn or app.dsn
    totals = dict.fromkeys(OUTCOMES, 0)
    for _ in range(max_rounds):
        waiting = await _prepare(dsn, names, with_scheduled)
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
    run now too (of ``queues`` only, when given); each round is a burst worker, at most
    ``max_rounds`` of them (a task that keeps retrying stays queued). Returns counts of
    ``succeeded``, ``failed``, ``retried`` and ``cancelled`` attempts. Call :func:`adrain`
    from async code.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("drain() cannot run inside an event loop: await adrain() instead")
    return asyncio.run(
        adrain(app, dsn=dsn, queues=queues, with_scheduled=with_scheduled, max_rounds=max_rounds)
    )
