"""The app the acceptance tests run with the real CLI (``--app tests.acceptance.app_under_test``).

Tasks write an execution ledger with their own connections, so duplicates and losses are
counted independently of pgqueue's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from typing import Any

import psycopg

import pgqueue

app = pgqueue.PgQueue()
_local = threading.local()


def ledger_connection() -> psycopg.Connection[Any]:
    """One autocommit connection per thread, to the database the worker uses."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True)
    return conn


def record() -> None:
    """Write (job id, attempt) to the ledger; a duplicate execution violates its key."""
    job = pgqueue.current_job()
    ledger_connection().execute(
        "INSERT INTO ledger (job_id, attempt, pid) VALUES (%s, %s, %s)",
        (job.id, job.attempt, os.getpid()),
    )


@app.task(queue="io")
def once(n: int) -> int:
    """Record the execution and return n."""
    record()
    return n


@app.task(queue="io", max_attempts=3)
def slow_first_attempt(seconds: float) -> str:
    """Record the execution; the first attempt sleeps (long enough to be killed)."""
    record()
    if pgqueue.current_job().attempt == 1:
        time.sleep(seconds)
    return "done"


@app.task(queue="io")
def sleeps(seconds: float) -> str:
    """Record the execution, then sleep."""
    record()
    time.sleep(seconds)
    return "slept"


@app.task(queue="io", executor="process")
def sleeps_in_a_child(seconds: float) -> str:
    """Record the execution, then sleep, in a child process of the worker."""
    record()
    time.sleep(seconds)
    return "slept"


@app.task(queue="io")
async def ignores_cancellation(seconds: float) -> str:
    """Record the execution, then sleep ``seconds``, swallowing every cancellation."""
    record()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(asyncio.CancelledError):  # the bug: a task that goes on
            await asyncio.sleep(deadline - time.monotonic())
    return "ignored"
