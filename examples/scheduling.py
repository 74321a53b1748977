"""Scheduling: run a job later with delay= or at a moment with run_at=, on the database's clock.

python scheduling.py
pgqueue --app scheduling:app worker --queues mail

The first command enqueues four reminders and prints each job's id and when it is due; the
worker then runs only the first one: the others stay queued until their `run_at`.

Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg

import pgqueue

app = pgqueue.PgQueue()


@app.task(name="mail.remind", queue="mail")
async def remind(user_id: int, text: str) -> str:
    """Send a reminder."""
    return f"reminded user {user_id}: {text}"


def main() -> None:
    """Enqueue a reminder for now, in an hour, tomorrow and on New Year's morning 2030."""
    new_year = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)  # run_at must be timezone-aware
    with psycopg.connect(os.environ["PGQUEUE_DSN"]) as conn:
        jobs = [
            remind.enqueue(conn, 1, "now"),
            remind.using(delay=3600).enqueue(conn, 1, "in an hour"),  # seconds after now()
            remind.using(delay=timedelta(days=1)).enqueue(conn, 1, "tomorrow"),
            remind.using(run_at=new_year, priority=10).enqueue(conn, 1, "happy new year"),
        ]
    for job, due in zip(jobs, ["now", "in an hour", "tomorrow", f"at {new_year}"], strict=True):
        print(f"enqueued job {job}: due {due}")


if __name__ == "__main__":
    main()
