"""The demo's producer: each order and its jobs are written in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._demo._tasks import BOUNCING, OPTED_OUT, render_invoice, send_receipt

CUSTOMERS = (
    "ada@example.com", "grace@example.com", "linus@example.com", BOUNCING,
    "margaret@example.com", OPTED_OUT, "barbara@example.com",
)  # fmt: skip
DECLINE_EVERY = 8  # every 8th payment is declined, so its transaction rolls back


class PaymentDeclined(Exception):
    """Raised inside an order's transaction to roll it back, as a failed payment would."""

    def __init__(self, order_id: int, job_ids: list[int]) -> None:
        super().__init__(f"payment for order {order_id} declined")
        self.order_id = order_id
        self.job_ids = job_ids


@dataclass
class Placed:
    """What the producer did: ids that committed and ids that were rolled back."""

    orders: list[int] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    rolled_back_orders: list[int] = field(default_factory=list)
    rolled_back_jobs: list[int] = field(default_factory=list)


def prepare(conn: psycopg.Connection[Any]) -> None:
    """Create the demo's schema and orders table if they are missing."""
    with conn.cursor() as cur:
        _store.run(cur, _store.demo_schema_create())
        _store.run(cur, _store.demo_orders_create())


def place_order(conn: psycopg.Connection[Any], n: int) -> tuple[int, list[int]]:
    """Insert order number ``n`` and enqueue its two jobs, in the caller's transaction."""
    customer = CUSTOMERS[n % len(CUSTOMERS)]
    total_cents = 500 + (n * 377) % 9500
    with conn.cursor() as cur:
        order_id = _store.run(cur, _store.demo_orders_insert(customer, total_cents))
    receipt = send_receipt.enqueue(conn, order_id, customer)
    invoice = render_invoice.enqueue(conn, order_id, total_cents)
    return order_id, [receipt, invoice]


def place_orders(conn: psycopg.Connection[Any], count: int) -> Placed:
    """Place ``count`` orders, one transaction each; every 8th rolls back."""
    placed = Placed()
    for n in range(1, count + 1):
        try:
            with conn.transaction():
                order_id, job_ids = place_order(conn, n)
                if n % DECLINE_EVERY == 0:
                    raise PaymentDeclined(order_id, job_ids)
        except PaymentDeclined as declined:
            placed.rolled_back_orders.append(declined.order_id)
            placed.rolled_back_jobs += declined.job_ids
        else:
            placed.orders.append(order_id)
            placed.jobs += job_ids
    return placed
