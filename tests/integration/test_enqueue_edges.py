"""Enqueue paths at their edges: big batches in the caller's pipeline (on autocommit
connections too), a cancelled aenqueue, odd unique keys."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

import pgqueue
from pgqueue._store import COPY_THRESHOLD
from pgqueue._task import MANY_CHUNK
from tests.helpers import query


def make_task(dsn: str) -> pgqueue.Task[[int], None]:
    """An app with one task."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="edge")
    def edge(n: int) -> None:
        del n

    return edge


def test_a_big_enqueue_many_in_the_callers_pipeline_enqueues_every_job(dsn: str) -> None:
    """Inside ``conn.pipeline()``, a batch big enough for COPY (which a pipeline cannot run)
    is inserted with INSERT statements: it raised NotSupportedError ("COPY cannot be used in
    pipeline mode") and enqueued nothing."""
    edge = make_task(dsn)
    with psycopg.connect(dsn) as conn, conn.pipeline():
        ids = edge.enqueue_many(conn, [((n,), {}) for n in range(COPY_THRESHOLD + 1)])
    assert len(ids) == COPY_THRESHOLD + 1 and ids == sorted(ids)
    rows = query(dsn, "SELECT id, args FROM pgqueue.jobs ORDER BY id")
    assert rows == [(i, [n]) for n, i in enumerate(ids)]


async def test_a_big_aenqueue_many_in_the_callers_pipeline_enqueues_every_job(dsn: str) -> None:
    """The async twin: aenqueue_many in ``aconn.pipeline()`` takes the INSERT path too."""
    edge = make_task(dsn)
    async with await psycopg.AsyncConnection.connect(dsn) as aconn, aconn.pipeline():
        ids = await edge.aenqueue_many(aconn, [((n,), {}) for n in range(COPY_THRESHOLD)])
    assert len(ids) == COPY_THRESHOLD
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(COPY_THRESHOLD,)]


def refused_batch() -> list[tuple[tuple[object, ...], dict[str, object]]]:
    """More calls than one INSERT takes; one past the first statement's is refused by the
    table (100,000 zeros: 200 kB of JSON, 1.2 MB of jsonb)."""
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((n,), {}) for n in range(MANY_CHUNK + 10)
    ]
    calls[MANY_CHUNK + 5] = (([0] * 100_000,), {})
    return calls


def test_a_refused_batch_in_an_autocommit_pipeline_leaves_no_job(dsn: str) -> None:
    """On an autocommit connection, in its pipeline (where COPY cannot run), a batch of more
    than one INSERT is all or nothing: each INSERT committed alone, and a batch refused at its
    second statement left the 5,000 jobs of its first."""
    edge = make_task(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(ValueError, match="as stored by PostgreSQL"), conn.pipeline():
            edge.enqueue_many(conn, refused_batch())  # type: ignore[arg-type]
        ids = edge.enqueue_many(conn, [((n,), {}) for n in range(MANY_CHUNK + 1)])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert query(dsn, "SELECT count(*), min(id) FROM pgqueue.jobs") == [(len(ids), ids[0])]


async def test_a_refused_abatch_in_an_autocommit_pipeline_leaves_no_job(dsn: str) -> None:
    """The async twin: aenqueue_many's statements commit together too."""
    edge = make_task(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
        with pytest.raises(ValueError, match="as stored by PostgreSQL"):
            async with aconn.pipeline():
                await edge.aenqueue_many(aconn, refused_batch())  # type: ignore[arg-type]
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


async def test_a_cancelled_aenqueue_leaves_the_connection_usable_and_its_transaction_aborted(
    dsn: str,
) -> None:
    """An aenqueue cancelled while it waits (here for a unique key that an open transaction
    holds) has its statement cancelled on the server: the transaction is aborted, as the docs
    say, and usable again once rolled back; the waiting job was not inserted."""
    edge = make_task(dsn).using(unique_key="held")
    async with (
        await psycopg.AsyncConnection.connect(dsn) as holder,
        await psycopg.AsyncConnection.connect(dsn) as aconn,
    ):
        held = await edge.aenqueue(holder, 1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await edge.aenqueue(aconn, 2)
        assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await aconn.execute("SELECT 1")
        await aconn.rollback()
        await holder.commit()
        assert await edge.aenqueue(aconn, 3) == held
        await aconn.commit()
    assert query(dsn, "SELECT id, args FROM pgqueue.jobs") == [(held, [1])]


@pytest.mark.parametrize("key", ["a\x00b", "\x00"])
def test_a_unique_key_holding_nul_is_refused_for_its_nul(key: str) -> None:
    """A key with a NUL character is refused before any SQL, saying why: the message said
    "use 1-255 characters" of a 3-character key."""
    with pytest.raises(ValueError, match="NUL"):
        pgqueue.PgQueue().using("edge", unique_key=key)


@pytest.mark.parametrize("size", [4, COPY_THRESHOLD])
def test_a_batch_in_an_autocommit_connections_transaction_takes_no_savepoint(
    dsn: str, size: int
) -> None:
    """On an autocommit connection inside ``conn.transaction()`` (psycopg's advice), a batch
    without keys writes its jobs in that transaction: its statements do not commit alone, so
    a transaction of its own is not needed, and ``conn.transaction()`` nested there made a
    savepoint, a subtransaction, around every batch (two more round trips)."""
    edge = make_task(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        ids = edge.enqueue_many(conn, [((n,), {}) for n in range(size)])
        row = conn.execute(
            "SELECT xmin = pg_current_xact_id()::xid FROM pgqueue.active_jobs WHERE id = %s",
            [ids[0]],
        ).fetchone()
    assert row == (True,)


# A test-only trigger: how many transaction ids the enqueuing transaction holds as its INSERT
# ends, its own and those of the subtransactions it is in (each is locked while it runs).
COUNT_XIDS = """
CREATE FUNCTION count_xids() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO xids SELECT count(*) FROM pg_locks
     WHERE locktype = 'transactionid' AND pid = pg_backend_pid();
    RETURN NULL;
END $$
"""


def test_a_keyed_batch_in_an_autocommit_connections_transaction_takes_one_savepoint(
    dsn: str,
) -> None:
    """A keyed batch there takes its own savepoint only, as in any caller's transaction:
    ``conn.transaction()`` nested made a second subtransaction around it."""
    query(dsn, "CREATE TABLE xids (n bigint)")
    query(dsn, COUNT_XIDS)
    query(dsn, "CREATE TRIGGER zz_count AFTER INSERT ON pgqueue.active_jobs"
               " FOR EACH STATEMENT EXECUTE FUNCTION count_xids()")  # fmt: skip
    edge = make_task(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        edge.enqueue_many(conn, [((n,), {}) for n in range(2)], unique_keys=["a", "b"])
    assert query(dsn, "SELECT n FROM xids") == [(2,)]  # the transaction's and the savepoint's
