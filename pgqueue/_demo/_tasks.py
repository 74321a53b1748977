"""The demo's tasks: what a shop runs once an order has committed."""

from __future__ import annotations

import asyncio
import hashlib

import pgqueue

app = pgqueue.PgQueue()  # the demo hands its DSN to the worker directly

# Queue names of the demo's own, so a demo run against a real database never claims real jobs.
QUEUES = {"pgqueue_demo.io": 20, "pgqueue_demo.cpu": 4}
QUICK_RETRY = pgqueue.RetryPolicy(base=0.2, cap=1.0)  # a demo should not wait an hour

BOUNCING = "mallory@example.invalid"
OPTED_OUT = "oscar@example.com"


@app.task(
    name="pgqueue.demo.send_receipt", queue="pgqueue_demo.io", max_attempts=3, retry=QUICK_RETRY
)
async def send_receipt(order_id: int, email: str) -> str:
    """Pretend to e-mail a receipt: one address always bounces, one customer opted out."""
    await asyncio.sleep(0.01)  # the SMTP round trip
    if email == OPTED_OUT:
        raise pgqueue.Cancel(f"{email} opted out of e-mail")
    if email == BOUNCING:
        raise ConnectionRefusedError(f"mailbox {email} does not exist")
    return f"receipt for order {order_id} sent to {email}"


@app.task(
    name="pgqueue.demo.render_invoice",
    queue="pgqueue_demo.cpu",
    executor="process",
    retry=QUICK_RETRY,
)
def render_invoice(order_id: int, total_cents: int) -> dict[str, str]:
    """Pretend to render a PDF in the process pool; the printer jams on some first attempts."""
    if order_id % 10 == 3 and pgqueue.current_job().attempt == 1:
        raise RuntimeError("printer jammed")
    digest = hashlib.sha256(f"{order_id}:{total_cents}".encode())
    for _ in range(2000):  # a little CPU work, as rendering would be
        digest = hashlib.sha256(digest.digest())
    return {"file": f"invoice-{order_id}.pdf", "sha256": digest.hexdigest()[:12]}


TASKS = (send_receipt.name, render_invoice.name)
