"""Testing code that enqueues, three ways. Run: pytest examples/testing"""

from shop import app, checkout, send_receipt

import pgqueue.testing


def test_eager_runs_the_task_inline():
    with pgqueue.testing.eager(app) as log:
        send_receipt.enqueue(None, "a@example.com", 9.5)  # no database needed
    assert log.jobs[0].result == "receipt for 9.50 sent to a@example.com"


def test_checkout_enqueues_a_receipt(pgqueue_conn):  # fixture of pgqueue's pytest plugin
    checkout(pgqueue_conn, "b@example.com", 20)
    pgqueue.testing.assert_enqueued(send_receipt, args=["b@example.com", 20], conn=pgqueue_conn)


def test_drain_runs_what_checkout_enqueued(pgqueue_conn, pgqueue_dsn):
    checkout(pgqueue_conn, "c@example.com", 5)
    counts = pgqueue.testing.drain(app, dsn=pgqueue_dsn)  # a real worker, until nothing is left
    assert counts["succeeded"] == 1
    pgqueue.testing.assert_not_enqueued(send_receipt, conn=pgqueue_conn)
