"""The app the fault-injection workers run: every task records its attempt in a ledger table.

The ledger (``fault_ledger``, UNIQUE(job_id, attempt)) is written by the task itself, in its
own autocommit transaction, so it counts executions independently of the queue's own state.
Running the same attempt twice bumps ``dupes`` instead of failing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import psycopg

import pgqueue
from pgqueue._worker._faults import crash_point

app = pgqueue.PgQueue()
quick_retry = pgqueue.RetryPolicy(base=0.05, cap=0.1)

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS fault_ledger (
    job_id   bigint      NOT NULL,
    attempt  integer     NOT NULL,
    pid      integer     NOT NULL,
    kind     text        NOT NULL DEFAULT 'run',
    dupes    integer     NOT NULL DEFAULT 0,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (job_id, attempt, kind)
)
"""

_RECORD = """
INSERT INTO fault_ledger (job_id, attempt, pid, kind) VALUES (%s, %s, %s, %s)
ON CONFLICT (job_id, attempt, kind) DO UPDATE SET dupes = fault_ledger.dupes + 1
"""

_conn: psycopg.AsyncConnection[Any] | None = None
_connecting: asyncio.Lock | None = None


async def _ledger() -> psycopg.AsyncConnection[Any]:
    """The worker's one ledger connection. The lock matters: 25 jobs starting at once would
    otherwise each open their own, and 8 workers doing so exhaust max_connections."""
    global _conn, _connecting
    if _connecting is None:
        _connecting = asyncio.Lock()
    async with _connecting:
        if _conn is None or _conn.closed:
            _conn = await psycopg.AsyncConnection.connect(app.dsn, autocommit=True)
    return _conn


async def _record(kind: str = "run") -> None:
    job = pgqueue.current_job()
    conn = await _ledger()
    await conn.execute(_RECORD, (job.id, job.attempt, os.getpid(), kind))


def _record_sync(kind: str) -> None:
    job = pgqueue.current_job()
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute(_RECORD, (job.id, job.attempt, os.getpid(), kind))


@app.task(queue="faults", max_attempts=5)
async def record(n: int) -> int:
    """The side effect: one ledger row for this attempt (``mid_task`` crashes before it)."""
    crash_point("mid_task")
    await _record()
    return n


@app.task(queue="faults", max_attempts=5)
async def slow_record(steps: int) -> None:
    """Work ``steps`` x 0.1 s (in steps, so a SIGSTOP pauses it), then record."""
    for _ in range(steps):
        await asyncio.sleep(0.1)
    await _record()


@app.task(queue="faults", max_attempts=3)
async def poison_main() -> None:
    """Kill the worker's main process, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(queue="faults", max_attempts=3, executor="process", retry=quick_retry)
def poison_process() -> None:
    """Kill the process-pool child that runs it, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(queue="cpu", executor="process")
def child_pid() -> int:
    """The pid of the process-pool child that ran it."""
    return os.getpid()


@app.task(queue="cpu", executor="process", timeout=1, max_attempts=2, retry=quick_retry)
def stubborn_process(seconds: float) -> int:
    """Ignore the timeout: sleep far past it (the worker must kill this child)."""
    pid = os.getpid()
    time.sleep(seconds)
    return pid


@app.task(queue="threads", executor="thread", timeout=0.5, max_attempts=1)
def stubborn_thread(seconds: float) -> None:
    """Ignore the timeout for ``seconds``, then record when the thread really ended."""
    time.sleep(seconds)
    _record_sync("thread_end")


@app.task(queue="threads", executor="thread")
def thread_record() -> None:
    """Record when this thread task started."""
    _record_sync("thread_start")


@app.task(queue="cpu", executor="process", max_attempts=2, retry=quick_retry)
def record_then_sleep(seconds: float) -> None:
    """Record this attempt (with the child's pid), then sleep: a long CPU-bound task."""
    _record_sync("child")
    time.sleep(seconds)
