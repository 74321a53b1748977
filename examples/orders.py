"""The tutorial's shop: an order and the jobs that follow from it, committed together.

Run it from this directory, with PGQUEUE_DSN pointing at a database where `pgqueue migrate` ran:

    python orders.py                                             # places three orders
    pgqueue --app orders:app worker --queues io,cpu:2 --burst    # runs their jobs, then exits
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import psycopg

import pgqueue

app = pgqueue.PgQueue()  # workers and the CLI read PGQUEUE_DSN


# Explicit names stay stable when the module moves, and when this file runs as __main__.
@app.task(name="shop.send_receipt", queue="io", max_attempts=5)
async def send_receipt(order_id: int, email: str) -> str:
    """E-mail the receipt (I/O-bound: runs on the worker's event loop)."""
    await asyncio.sleep(0.05)  # the mail server round trip
    return f"receipt for order {order_id} sent to {email}"


@app.task(name="shop.render_invoice", queue="cpu", executor="process")
def render_invoice(order_id: int, total_cents: int) -> str:
    """Render the invoice (CPU-bound: runs in the worker's process pool)."""
    digest = hashlib.sha256(f"{order_id}:{total_cents}".encode()).hexdigest()
    return f"invoice-{order_id}-{digest[:8]}.pdf"


CREATE_ORDERS = """
CREATE TABLE IF NOT EXISTS shop_orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text    NOT NULL,
    total_cents integer NOT NULL
)
"""


class PaymentDeclined(Exception):
    """The payment provider said no: the order must not exist, nor its jobs."""


def place_order(conn: psycopg.Connection, email: str, total_cents: int) -> int:
    """Write the order and enqueue its jobs in one transaction; returns the order id."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO shop_orders (email, total_cents) VALUES (%s, %s) RETURNING id",
            (email, total_cents),
        ).fetchone()
        assert row is not None
        order_id: int = row[0]
        send_receipt.enqueue(conn, order_id, email)
        render_invoice.enqueue(conn, order_id, total_cents)
        if total_cents > 100_000:
            raise PaymentDeclined(f"order {order_id}: {total_cents} cents is over the limit")
    return order_id


def main() -> None:
    """Create the table, place two orders that commit and one that rolls back."""
    with psycopg.connect(os.environ["PGQUEUE_DSN"], autocommit=True) as conn:
        conn.execute(CREATE_ORDERS)
        for email, total in [("ada@example.com", 4200), ("grace@example.com", 990)]:
            print("placed order", place_order(conn, email, total))
        try:
            place_order(conn, "mallory@example.com", 250_000)
        except PaymentDeclined as declined:
            print("rolled back:", declined)


if __name__ == "__main__":
    main()
