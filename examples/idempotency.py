"""At-least-once execution: make a task's effect happen once even if the task runs twice.

A worker can die after the effect but before the job is acknowledged; the job then runs
again. Here the effect (loyalty points) is written with a unique key in the same transaction
that checks for it, so a second run changes nothing.

    python idempotency.py
    pgqueue --app idempotency:app worker --queues loyalty

The first command prints the two jobs it enqueued for the same order; once the worker has run
both, one job's result is "credited", the other's "already credited", and `loyalty_points`
holds one row.

Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

import os

import psycopg

import pgqueue

app = pgqueue.PgQueue()

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS loyalty_points (
    order_id  bigint PRIMARY KEY,  -- the idempotency key: one credit per order, ever
    customer  text    NOT NULL,
    points    integer NOT NULL
)
"""

CREDIT = """
INSERT INTO loyalty_points (order_id, customer, points) VALUES (%s, %s, %s)
ON CONFLICT (order_id) DO NOTHING
RETURNING order_id
"""


@app.task(name="loyalty.credit_points", queue="loyalty")
def credit_points(order_id: int, customer: str, total_cents: int) -> str:
    """Credit one point per euro, once per order however often the job runs."""
    with psycopg.connect(os.environ["PGQUEUE_DSN"]) as conn:  # commits when the block ends
        credited = conn.execute(CREDIT, (order_id, customer, total_cents // 100)).fetchone()
    return "credited" if credited else "already credited"


def main() -> None:
    """Create the ledger and enqueue the same credit twice, as a redelivery would."""
    with psycopg.connect(os.environ["PGQUEUE_DSN"]) as conn:
        conn.execute(CREATE_LEDGER)
        jobs = [credit_points.enqueue(conn, 42, "ada@example.com", 4200) for _ in range(2)]
    print(f"enqueued jobs {jobs[0]} and {jobs[1]}: the same credit for order 42")


if __name__ == "__main__":
    main()
