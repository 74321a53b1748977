"""The app the fault-injection workers run: every task records its attempt in a ledger table.

The ledger (``fault_ledger``, UNIQUE(job_id, attempt)) is written by the task itself, in its
own autocommit transaction, so it counts executions independently of the queue's own state.
Running the same attempt twice bumps ``dupes`` instead of failing.
"""

from __future__ import annotations

import asyncio
import json
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


# The chaos workload: each job carries a plan, per attempt, of what its runs of that attempt
# do in turn ("ok" past the plan's end); each run records itself in chaos_ledger first, so that
# tests/faults/chaos.py can judge the jobs' rows by what their tasks did.
CHAOS_DDL = """
CREATE TABLE IF NOT EXISTS chaos_ledger (
    run      bigserial   PRIMARY KEY,
    job_id   bigint      NOT NULL,
    attempt  integer     NOT NULL,
    action   text        NOT NULL,
    pid      integer     NOT NULL,
    started  timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended    timestamptz
)
"""

_CHAOS_START = """
WITH n AS (SELECT count(*)::int AS seq FROM chaos_ledger
            WHERE job_id = %(job)s AND attempt = %(attempt)s)
INSERT INTO chaos_ledger (job_id, attempt, action, pid)
SELECT %(job)s, %(attempt)s,
       coalesce(%(plan)s::jsonb -> (%(attempt)s - 1) ->> n.seq, 'ok'), %(pid)s FROM n
RETURNING run, action
"""

_CHAOS_END = "UPDATE chaos_ledger SET ended = clock_timestamp() WHERE run = %s"

GIVE_BACK = ("retry", "retry_delay")  # actions raising Retry(): the attempt is given back


def _ledger_dsn() -> str:
    return os.environ.get("FAULTS_LEDGER_DSN") or str(app.dsn)


def _start(conn: psycopg.Connection[Any], plan: list[list[str]]) -> tuple[int, str]:
    job = pgqueue.current_job()
    params = {"job": job.id, "attempt": job.attempt, "plan": json.dumps(plan), "pid": os.getpid()}
    row = conn.execute(_CHAOS_START, params).fetchone()
    assert row is not None
    return row[0], row[1]


def _end(conn: psycopg.Connection[Any], run: int, action: str) -> None:
    """Record the run's end, then do what ``action`` says (timeouts and cancels never end)."""
    conn.execute(_CHAOS_END, [run])
    if action == "fail":
        raise RuntimeError("planned failure")
    if action == "retry":
        raise pgqueue.Retry()
    if action == "retry_delay":
        raise pgqueue.Retry(delay=0.2)


@app.task(queue="chaos", max_attempts=6, retry=quick_retry)
async def chaos(plan: list[list[str]]) -> None:
    """Run on the loop: do what ``plan`` says for this run (see _CHAOS_START)."""
    crash_point("mid_task")
    with await asyncio.to_thread(psycopg.connect, _ledger_dsn(), autocommit=True) as conn:
        run, action = await asyncio.to_thread(_start, conn, plan)
        if action == "timeout":
            await asyncio.sleep(30)  # the job's timeout interrupts it
        elif action == "cancel":
            async with await psycopg.AsyncConnection.connect(_ledger_dsn()) as own:
                await app.acancel(own, pgqueue.current_job().id)
                await own.commit()
            await asyncio.sleep(10)  # the worker cancels it at its next heartbeat
            raise pgqueue.Retry()  # else: a retry of a job asked to cancel ends cancelled
        await asyncio.to_thread(_end, conn, run, action)


@app.task(queue="chaos", executor="thread", max_attempts=6, retry=quick_retry)
def chaos_sync(plan: list[list[str]]) -> None:
    """Run in a thread: do what ``plan`` says for this run (see _CHAOS_START)."""
    crash_point("mid_task")
    with psycopg.connect(_ledger_dsn(), autocommit=True) as conn:
        run, action = _start(conn, plan)
        if action == "timeout":
            time.sleep(1)  # past the job's timeout: the worker gives up on it
            return
        if action == "cancel":
            app.cancel(conn, pgqueue.current_job().id)
            pgqueue.current_job().cancelled.wait(10)
            raise pgqueue.Retry()
        _end(conn, run, action)
