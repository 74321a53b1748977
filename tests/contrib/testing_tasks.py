"""Tasks used by the pgqueue.testing tests."""

from __future__ import annotations

from datetime import date

import psycopg

import pgqueue

app = pgqueue.PgQueue(retry=pgqueue.RetryPolicy(base=60, cap=60))
other = pgqueue.PgQueue()


@app.task
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@app.task(queue="emails")
def who_am_i() -> list[object]:
    """The job's own id and attempt."""
    job = pgqueue.current_job()
    return [job.id, job.attempt]


@app.task
async def double(x: int) -> int:
    """An async task."""
    return 2 * x


@app.task(max_attempts=2)
def fails() -> None:
    """Always raises."""
    raise ValueError("nope")


@app.task
def today() -> date:
    """Returns what JSON cannot hold: a worker fails the job."""
    return date(2030, 1, 2)


@app.task(store_result=False)
def today_unstored() -> date:
    """The same, with its return value discarded: a worker lets it succeed."""
    return date(2030, 1, 2)


@other.task
def elsewhere() -> str:
    """A task of another app."""
    return "ran"


@app.task
def hand_over(dsn: str) -> None:
    """Enqueue (and commit) a job of another app's task, in the queue being drained."""
    with psycopg.connect(dsn) as conn:
        elsewhere.enqueue(conn)
