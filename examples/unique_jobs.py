"""Unique jobs: at most one queued or running job per key.

    python unique_jobs.py

Enqueues the same key twice (one job), asks for an error on the third try, runs the job, and
shows that the key is free again once the job has finished (that last job stays queued).

Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

import os

import psycopg

import pgqueue

app = pgqueue.PgQueue()


@app.task(name="catalogue.sync_order", queue="catalogue")
async def sync_order(order_id: int) -> str:
    """Push one order to the catalogue service (pretend)."""
    return f"order {order_id} synced"


def main() -> None:
    """Enqueue duplicates, run the job, enqueue again."""
    unique = sync_order.using(unique_key="sync-order-42")
    with psycopg.connect(os.environ["PGQUEUE_DSN"]) as conn:
        first = unique.enqueue(conn, 42)
        second = unique.enqueue(conn, 42)
        print(f"first enqueue: job {first}; second enqueue: job {second} (the same job)")
        try:
            sync_order.using(unique_key="sync-order-42", on_conflict="raise").enqueue(conn, 42)
        except pgqueue.DuplicateJob as duplicate:
            print(f"on_conflict='raise': DuplicateJob, existing job {duplicate.job_id}")
        conn.commit()  # the duplicate did not abort the transaction

        app.run_worker(queues=["catalogue"], burst=True)  # run what is queued, then return
        again = unique.enqueue(conn, 42)
        conn.commit()
        print(f"after job {first} finished: new job {again}")


if __name__ == "__main__":
    main()
