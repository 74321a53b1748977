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


async def test_a_cancellation_as_a_statement_ends_leaves_none_of_the_batch(dsn: str, aconn) -> None:
    """The task is cancelled once its INSERT has ended in the server. The cancellation lands
    in psycopg's wait for the rest of the INSERT's result (the batch is taken back, and the
    transaction keeps what it did before) or, when that had all been read, in the wait for
    the look-up of the held key (which psycopg's cancel request may stop, aborting the
    transaction): which one is up to the scheduler, and either way none of the batch
    commits. Without the take-back, the batch's savepoint was left open with its jobs in."""
    query(dsn, NOTICE_AFTER)
    query(dsn, "CREATE TRIGGER zz_notice AFTER INSERT ON pgqueue.active_jobs"
               " FOR EACH STATEMENT EXECUTE FUNCTION notice_after()")  # fmt: skip
    _app, charge = make_app(dsn)
    before = [(await charge.aenqueue(aconn, 100),)]
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
    task = asyncio.ensure_future(charge.aenqueue_many(aconn, calls(2), unique_keys=["a", "h"]))
    with pytest.raises(asyncio.CancelledError):
        await task
    taken_back = aconn.info.transaction_status == INTRANS
    assert taken_back or aconn.info.transaction_status == INERROR
    await aconn.commit()
    assert query(dsn, "SELECT id FROM pgqueue.jobs ORDER BY id") == (before if taken_back else [])


class CancelLoader(psycopg.adapt.Loader):
    """Text, but the key "last" cancels the task reading it: the batch's INSERT has ended and
    its rows are being read, so the cancellation lands in the wait for the next statement,
    the savepoint's RELEASE."""

    def load(self, data: Any) -> str:
        text = bytes(data).decode()
        if text == "last":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        return text


async def test_a_cancellation_landing_in_the_release_aborts_the_transaction(
    dsn: str, aconn
) -> None:
    """Whether psycopg's cancel request stops the RELEASE or comes too late, the batch's jobs
    cannot be taken back alone: the transaction is aborted, and a commit commits nothing of
    it (nor what it did before). It committed them when the RELEASE had ended."""
    _app, charge = make_app(dsn)
    await charge.aenqueue(aconn, 100)
    aconn.adapters.register_loader("text", CancelLoader)
    with pytest.raises(asyncio.CancelledError):
        await charge.aenqueue_many(aconn, calls(2), unique_keys=["first", "last"])
    assert aconn.info.transaction_status == INERROR
    await aconn.commit()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


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


async def test_a_cancellation_before_the_savepoint_leaves_the_transaction_as_it_was(
    dsn: str, aconn
) -> None:
    """Cancelled while it waits for the connection (another task of the caller's holds it),
    before its savepoint is set: nothing of the batch was sent, and the transaction goes on.
    The take-back ran there, rolling back to a savepoint that did not exist yet, which
    aborted the transaction and lost what it did before."""
    _app, charge = make_app(dsn)
    kept = await charge.aenqueue(aconn, 100)
    async with aconn.lock:
        batch = charge.aenqueue_many(aconn, calls(2), unique_keys=["a", "b"])
        task = asyncio.ensure_future(batch)
        for _ in range(20):  # no I/O before its first statement: it reaches the lock
            await asyncio.sleep(0)
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert aconn.info.transaction_status == INTRANS
    await aconn.commit()
    assert query(dsn, "SELECT id FROM pgqueue.jobs") == [(kept,)]
