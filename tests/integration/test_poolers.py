"""Waiting for a job through a real PgBouncer in transaction mode (tests/fix_pgbouncer.py),
where one client's consecutive transactions reach different server backends."""

from __future__ import annotations

import threading

import psycopg
import pytest

import pgqueue
from tests.helpers import query


def queued_job(dsn: str, via: str) -> tuple[pgqueue.PgQueue, int]:
    """An app whose DSN goes through the pooler, and a job no worker will run."""
    app = pgqueue.PgQueue(dsn=via)
    nowhere = app.task(name="nowhere", queue="nowhere")(lambda: None)
    with psycopg.connect(dsn) as conn:
        return app, nowhere.enqueue(conn)


def test_wait_sync_polls_through_pgbouncer_until_the_job_finishes(dsn: str, pgbouncer: str) -> None:
    """wait_sync through a transaction-mode pool reads its job again and again, each read on
    whichever backend serves it: it times out, then returns the job once it is cancelled.
    (It let psycopg prepare the read after five: the sixth prepared it on one backend, the
    seventh ran it on another, 'prepared statement "_pg3_0" does not exist'.)"""
    app, job_id = queued_job(dsn, pgbouncer)
    with pytest.raises(TimeoutError):
        app.wait_sync(job_id, timeout=0.5, poll_interval=0.02)
    canceller = threading.Timer(0.5, query, [dsn, "SELECT pgqueue.cancel(%s)", [job_id]])
    canceller.start()
    try:
        assert app.wait_sync(job_id, timeout=30, poll_interval=0.02).state == "cancelled"
    finally:
        canceller.join()
