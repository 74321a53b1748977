"""A keyed enqueue_many interrupted (its task cancelled, KeyboardInterrupt) leaves none of its
jobs for the caller to commit: the statement a cancellation stops aborts the transaction, and
one that lands between statements takes the batch back."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import psycopg
import pytest

from tests.helpers import query
from tests.integration.test_unique_jobs import make_app, wait_until
from tests.integration.test_unique_many import calls

INTRANS = psycopg.pq.TransactionStatus.INTRANS
INERROR = psycopg.pq.TransactionStatus.INERROR


class StopLoader(psycopg.adapt.Loader):
    """Text, but the key "stop" raises KeyboardInterrupt through a real SIGINT: the batch's
    INSERT has returned its rows, and the next statement is not sent."""

    def load(self, data: Any) -> str:
        text = bytes(data).decode()
        if text == "stop":
            signal.raise_signal(signal.SIGINT)
        return text


def test_a_keyboard_interrupt_between_statements_leaves_none_of_the_batch(dsn: str, conn) -> None:
    """KeyboardInterrupt once the batch's first INSERT is in: the batch's savepoint was left
    open with its jobs in, and a caller that caught the interrupt and committed committed
    them. The batch is taken back; the transaction is usable and keeps what it did before."""
    _app, charge = make_app(dsn)
    kept = charge.enqueue(conn, 100)
    conn.adapters.register_loader("text", StopLoader)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            charge.enqueue_many(conn, calls(3), unique_keys=["a", "stop", None])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert conn.info.transaction_status == INTRANS
    conn.commit()
    assert query(dsn, "SELECT id FROM pgqueue.jobs") == [(kept,)]


# A test-only trigger: the batch's INSERT, once its rows are in, says so with a notice.
NOTICE_AFTER = """
CREATE FUNCTION notice_after() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    RAISE NOTICE 'pgq-test: inserted';
    RETURN NULL;
END $$
"""


@pytest.mark.parametrize("held", [True, False])
async def test_a_cancellation_as_a_statement_ends_leaves_none_of_the_batch(
    dsn: str, aconn, held: bool
) -> None:
    """The task is cancelled once its INSERT has ended, and the cancellation lands in the
    wait for the next statement, which psycopg's cancel request is too late to stop. When
    that is the look-up of a held key, the batch's savepoint was left open with its jobs in
    for the caller to commit: the batch is taken back, and the transaction keeps what it did
    before. When it is the savepoint's RELEASE, the jobs cannot be taken back alone: the
    transaction is aborted, and commits nothing."""
    query(dsn, NOTICE_AFTER)
    query(dsn, "CREATE TRIGGER zz_notice AFTER INSERT ON pgqueue.active_jobs"
               " FOR EACH STATEMENT EXECUTE FUNCTION notice_after()")  # fmt: skip
    _app, charge = make_app(dsn)
    kept = await charge.aenqueue(aconn, 100)
    before = [(kept,)]
    if held:
        before.append((await charge.using(unique_key="h").aenqueue(aconn, 101),))
    pid = aconn.info.backend_pid

    def idle() -> bool:
        rows = query(dsn, "SELECT state FROM pg_stat_activity WHERE pid = %s", [pid])
        return rows == [("idle in transaction",)]

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary == "pgq-test: inserted" and task is not None:
            wait_until(idle)  # the statement has ended, its result is not read yet
            task.cancel()

    task: asyncio.Task[list[int]] | None = None
    aconn.add_notice_handler(on_notice)
    batch = charge.aenqueue_many(aconn, calls(2), unique_keys=["a", "h" if held else "b"])
    task = asyncio.ensure_future(batch)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert aconn.info.transaction_status == (INTRANS if held else INERROR)
    await aconn.commit()
    assert query(dsn, "SELECT id FROM pgqueue.jobs ORDER BY id") == (before if held else [])


# A test-only trigger: the batch's INSERT waits for an advisory lock the test holds.
WAIT_AFTER = """
CREATE FUNCTION wait_after() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    PERFORM pg_advisory_xact_lock_shared(4343);
    RETURN NULL;
END $$
"""


@pytest.mark.parametrize("autocommit", [False, True])
async def test_a_cancellation_during_a_statement_aborts_the_transaction(
    dsn: str, autocommit: bool
) -> None:
    """Cancelled (asyncio.timeout) while its INSERT runs: psycopg cancels the statement in the
    server, so the transaction is aborted and a commit commits nothing; on an autocommit
    connection the batch's own transaction is rolled back, and the connection goes on."""
    query(dsn, WAIT_AFTER)
    query(dsn, "CREATE TRIGGER zz_wait AFTER INSERT ON pgqueue.active_jobs"
               " FOR EACH STATEMENT EXECUTE FUNCTION wait_after()")  # fmt: skip
    _app, charge = make_app(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=autocommit) as conn:
        with psycopg.connect(dsn, autocommit=True) as gate:
            gate.execute("SELECT pg_advisory_lock(4343)")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await charge.aenqueue_many(conn, calls(2), unique_keys=["a", "b"])
        status = conn.info.transaction_status
        assert status == (psycopg.pq.TransactionStatus.IDLE if autocommit else INERROR)
        await conn.commit()
        await conn.execute("SELECT 1")
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]
