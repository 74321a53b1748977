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

# Explicit names: run as a script, the tasks would be __main__.slow_report, a name no other
# worker knows (the tutorial's orders.py names its tasks for the same reason).


@app.task(name="reports.slow_report", queue="reports", timeout=0.5)
async def slow_report() -> None:
    """Async: cancelled (CancelledError inside the coroutine) when its 0.5 s are up."""
    await asyncio.sleep(60)


@app.task(name="reports.export", queue="reports", executor="thread")
def export(rows: int) -> str:
    """Thread: cannot be interrupted, so it checks current_job().cancelled between steps."""
    job = pgqueue.current_job()
    for done in range(rows):
        if job.cancelled.wait(0.01):  # set on timeout, app.cancel, lost lease or shutdown
            return f"stopped after {done} rows"
    return f"exported {rows} rows"


async def main(dsn: str) -> dict[int, tuple[str, str | None]]:
    """Enqueue two jobs, cancel the export while it runs, and return how each job ended."""
    with psycopg.connect(dsn) as conn:
        ids = [slow_report.enqueue(conn), export.enqueue(conn, 100_000)]
        conn.commit()
    worker = app.worker(dsn=dsn, queues=["reports"], poll_interval=0.1)
    running = asyncio.create_task(worker.run())
    with psycopg.connect(dsn, autocommit=True) as conn:
        while app.get_job(conn, ids[1]).state != "running":  # a queued job would never run
            await asyncio.sleep(0.05)
        app.cancel(conn, ids[1])  # "requested": its worker sets current_job().cancelled
        while any(app.get_job(conn, job_id).finished_at is None for job_id in ids):
            await asyncio.sleep(0.1)
        jobs = [app.get_job(conn, job_id) for job_id in ids]
    worker.stop()
    await running
    return {job.id: (job.state, job.last_error) for job in jobs}


if __name__ == "__main__":
    for job, end in asyncio.run(main(os.environ["PGQUEUE_DSN"])).items():
        print(job, *end)
