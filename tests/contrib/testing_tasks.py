"""Tasks used by the pgqueue.testing tests."""

from __future__ import annotations

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


@other.task
def elsewhere() -> str:
    """A task of another app."""
    return "ran"
