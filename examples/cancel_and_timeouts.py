"""Timeouts and cancellation: an async task timed out, a thread task cancelled while it runs.

PGQUEUE_DSN=postgresql://... python cancel_and_timeouts.py

Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

import asyncio
import os

import psycopg

import pgqueue

app = pgqueue.PgQueue(max_attempts=1)


@app.task(queue="reports", timeout=0.5)
async def slow_report() -> None:
    """Async: cancelled (CancelledError inside the coroutine) when its 0.5 s are up."""
    await asyncio.sleep(60)


@app.task(queue="reports", executor="thread")
def export(rows: int) -> str:
    """Thread: cannot be interrupted, so it checks current_job().cancelled between steps."""
    job = pgqueue.current_job()
    for done in range(rows):
        if job.cancelled.wait(0.01):  # set on timeout, app.cancel, lost lease or shutdown
            return f"stopped after {done} rows"
    return f"exported {rows} rows"


async def main(dsn: str) -> dict[int, tuple[str, str | None]]:
    """Enqueue two jobs, cancel the export while it runs, and return every job's end."""
    with psycopg.connect(dsn) as conn:
        slow_report.enqueue(conn)
        export_id = export.enqueue(conn, 100_000)
        conn.commit()
    worker = app.worker(dsn=dsn, queues=["reports"], poll_interval=0.1)
    running = asyncio.create_task(worker.run())
    with psycopg.connect(dsn, autocommit=True) as conn:
        while app.cancel(conn, export_id) is None:  # not claimed yet: nothing to cancel
            await asyncio.sleep(0.05)
        ended = "SELECT id, state, last_error FROM pgqueue.jobs WHERE finished_at IS NOT NULL"
        while len(rows := conn.execute(ended).fetchall()) < 2:
            await asyncio.sleep(0.1)
    worker.stop()
    await running
    return {job_id: (state, error) for job_id, state, error in rows}


if __name__ == "__main__":
    for job, end in asyncio.run(main(os.environ["PGQUEUE_DSN"])).items():
        print(job, *end)
