"""Retries: backoff with full jitter, pgqueue.Retry to come back later, pgqueue.Cancel to stop.

python retries.py                                  # enqueues one job of each kind
pgqueue --app retries:app worker --queues payments

Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

import os

import psycopg

import pgqueue

# Every task of this app retries after uniform(0, min(cap, base * factor ** (attempt - 1))) s.
app = pgqueue.PgQueue(max_attempts=4, retry=pgqueue.RetryPolicy(base=0.2, factor=2, cap=2.0))

REFUNDED = {13}  # orders refunded meanwhile: charging them is pointless
_waited: set[int] = set()  # jobs that already waited for the rate limit (this process)


@app.task(name="payments.charge", queue="payments")
async def charge(order_id: int) -> str:
    """Fails twice (a flaky gateway), then succeeds on attempt 3; the errors are kept."""
    if pgqueue.current_job().attempt < 3:
        raise ConnectionError("payment gateway timed out")
    return f"order {order_id} charged"


@app.task(name="payments.sync_ledger", queue="payments")
async def sync_ledger(order_id: int) -> str:
    """Told to slow down once: Retry(delay) runs it again later without spending an attempt."""
    job_id = pgqueue.current_job().id
    if job_id not in _waited:
        _waited.add(job_id)
        raise pgqueue.Retry(delay=0.5)  # e.g. the API answered 429 Too Many Requests
    return f"ledger synced for order {order_id}"


@app.task(name="payments.capture", queue="payments")
async def capture(order_id: int) -> str:
    """Cancel ends the job as cancelled at once: retrying cannot help."""
    if order_id in REFUNDED:
        raise pgqueue.Cancel(f"order {order_id} was refunded")
    return f"order {order_id} captured"


@app.task(name="payments.reconcile", queue="payments", max_attempts=2)
async def reconcile(order_id: int) -> None:
    """Always raises: after max_attempts it ends as failed, with every traceback kept."""
    raise ValueError(f"order {order_id}: totals do not match")


def main() -> None:
    """Enqueue one job of each kind, in one transaction."""
    with psycopg.connect(os.environ["PGQUEUE_DSN"]) as conn:
        for task, order_id in [(charge, 7), (sync_ledger, 7), (capture, 13), (reconcile, 7)]:
            print(task.name, "job", task.enqueue(conn, order_id))


if __name__ == "__main__":
    main()
