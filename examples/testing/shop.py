"""The code under test: a task and the function that enqueues it."""

import pgqueue

app = pgqueue.PgQueue()


@app.task
def send_receipt(email: str, total: float) -> str:
    return f"receipt for {total:.2f} sent to {email}"


def checkout(conn, email: str, total: float) -> None:
    with conn.transaction():
        conn.execute("SELECT 1")  # ... the order's own writes ...
        send_receipt.enqueue(conn, email, total)
