"""The worker side of examples/enqueue_from_trigger.sql, and a run of the whole thing.

Run ``psql "$PGQUEUE_DSN" -f examples/enqueue_from_trigger.sql`` once, then
``python examples/enqueue_from_trigger.py``: it inserts a signup (the trigger enqueues the
job), runs a burst worker, and prints the job's outcome.

Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

import asyncio
import os

import psycopg

import pgqueue

app = pgqueue.PgQueue(os.environ.get("PGQUEUE_DSN"))


@app.task(name="emails.send_welcome", queue="emails")
async def send_welcome(email: str) -> str:
    """Pretend to send the email; the return value is stored as the job's result."""
    return f"welcome sent to {email}"


def main() -> None:
    """Insert a signup (the trigger enqueues the job), run a burst worker, print the job."""
    with psycopg.connect(app.dsn) as conn:
        conn.execute("INSERT INTO signups (email) VALUES ('ada@example.com')")
        [(job_id,)] = conn.execute(
            "SELECT id FROM pgqueue.jobs WHERE task = 'emails.send_welcome' ORDER BY id DESC"
            " LIMIT 1"
        ).fetchall()
    asyncio.run(app.worker(queues=["emails"], burst=True).run())
    job = app.wait_sync(job_id, timeout=30)
    print(f"job {job.id}: {job.state}, result {job.result!r}")


if __name__ == "__main__":
    main()
