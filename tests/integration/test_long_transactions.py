"""A worker warns of what keeps the queue's dead row versions from being removed: transactions,
open or prepared, replication slots and standbys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import _store, migrate
from tests.faults.harness import wait_for
from tests.faults.private_pg import PrivateServer
from tests.helpers import query, run_worker_until

OPEN_FOR = 0.3  # seconds each held transaction is open before a pass; the tests warn at 0.2
# The shared server allows no prepared transactions; a standby reports its xmin every second.
PRIMARY = ("max_prepared_transactions=2",)
STANDBY = (*PRIMARY, "hot_standby_feedback=on", "wal_receiver_status_interval=1")


@pytest.fixture(autouse=True)
def warnings(caplog: Any) -> Any:
    """The worker's warnings, captured."""
    caplog.set_level(logging.WARNING, logger="pgqueue.worker")
    return caplog


def warned(caplog: Any, holder: psycopg.Connection[Any]) -> list[logging.LogRecord]:
    """The long-transaction warnings about ``holder``'s session (other sessions of the shared
    server may be named too: each test looks for its own)."""
    return [
        r for r in caplog.records
        if getattr(r, "action", None) == "long_transaction"
        and getattr(r, "pid", None) == holder.info.backend_pid
    ]  # fmt: skip


async def hold(holder: psycopg.Connection[Any], statement: str, snapshot: bool = False) -> None:
    """Open a transaction on ``holder`` with ``statement`` (under REPEATABLE READ, which keeps
    its snapshot to the end, if ``snapshot``) and leave it idle for OPEN_FOR seconds."""
    if snapshot:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    holder.execute(statement)  # type: ignore[arg-type]
    await asyncio.sleep(OPEN_FOR)


async def maintain(
    app: pgqueue.PgQueue, passes: int = 1, warn_after: float = 0.2, pause: float = 0.0
) -> None:
    """Run ``passes`` maintenance passes of one new worker, ``pause`` seconds apart, then close
    its connections."""
    worker = app.worker(long_transaction_warning=warn_after)
    try:
        for n in range(passes):
            await asyncio.sleep(pause if n else 0)
            await worker.maintain()
    finally:
        await worker._close_connections()


async def test_a_long_snapshot_in_the_queue_database_is_reported_once(
    app: pgqueue.PgQueue, dsn: str, warnings: Any
) -> None:
    """A read-only transaction left open in the queue's database is named, once."""
    with psycopg.connect(dsn, application_name="report-job") as holder:
        await hold(holder, "SELECT count(*) FROM pgqueue.active_jobs", snapshot=True)
        await maintain(app, passes=2)
        [record] = warned(warnings, holder)
    assert "report-job" in record.getMessage()
    assert "idle in transaction" in record.getMessage()
    assert "has written" not in record.getMessage()
    assert record.open_s >= 0.2  # type: ignore[attr-defined]


async def test_a_new_transaction_of_the_same_session_is_reported_again(
    app: pgqueue.PgQueue, dsn: str, warnings: Any
) -> None:
    """Once per transaction, not per session: the next long one is named too."""
    worker = app.worker(long_transaction_warning=0.2)
    try:
        with psycopg.connect(dsn) as holder:
            await hold(holder, "SELECT txid_current()")
            await worker.maintain()
            holder.commit()
            await hold(holder, "SELECT txid_current()")
            await worker.maintain()
            await worker.maintain()
            assert len(warned(warnings, holder)) == 2
    finally:
        await worker._close_connections()


async def test_another_database_counts_only_once_it_has_written(
    app: pgqueue.PgQueue, empty_dsn: str, warnings: Any
) -> None:
    """A snapshot elsewhere does not hold back the queue's tables; a transaction id does."""
    with psycopg.connect(empty_dsn) as holder:
        await hold(holder, "SELECT 1", snapshot=True)
        await maintain(app)
        assert warned(warnings, holder) == []
        holder.execute("SELECT txid_current()")
        await maintain(app)
        [record] = warned(warnings, holder)
    assert "has written" in record.getMessage()


async def test_a_short_transaction_or_zero_is_not_reported(
    app: pgqueue.PgQueue, dsn: str, warnings: Any
) -> None:
    """Younger than the threshold: not named; long_transaction_warning=0: no check at all."""
    with psycopg.connect(dsn) as holder:
        await hold(holder, "SELECT txid_current()")
        await maintain(app, warn_after=60)
        await maintain(app, warn_after=0)
        assert warned(warnings, holder) == []
        await maintain(app)  # the same transaction, past the threshold
        assert len(warned(warnings, holder)) == 1


async def test_metrics_publish_the_age_of_the_oldest_holder(app: pgqueue.PgQueue, dsn: str) -> None:
    """pgqueue_oldest_transaction_seconds: how long the oldest holder has been open."""
    parser = pytest.importorskip("prometheus_client.parser")
    worker = app.worker(metrics_port=0, poll_interval=0.05)
    ages: list[float] = []

    def scraped() -> bool:
        if worker.events.metrics_port is None:
            return False
        url = f"http://127.0.0.1:{worker.events.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        families = parser.text_string_to_metric_families(text)
        ages.extend(s.value for f in families for s in f.samples
                    if s.name == "pgqueue_oldest_transaction_seconds")  # fmt: skip
        return bool(ages) and ages[-1] > 0  # 0 until the first refresh

    with psycopg.connect(dsn) as holder:
        await hold(holder, "SELECT txid_current()")
        await run_worker_until(worker, scraped)
    assert OPEN_FOR <= ages[-1] < 60


@pytest.fixture
def primary() -> Iterator[PrivateServer]:
    """A private server that allows prepared transactions, the queue migrated into 'queue'."""
    server = PrivateServer(*PRIMARY)
    try:
        query(server.dsn, "CREATE DATABASE queue")
        migrate(queue_dsn(server))
        yield server
    finally:
        server.destroy()


def queue_dsn(server: PrivateServer) -> str:
    """The DSN of ``server``'s database 'queue'."""
    return server.dsn.rsplit("/", 1)[0] + "/queue"


def holders(server: PrivateServer, kind: str) -> list[_store.HorizonHolder]:
    """The holders of ``kind`` the store finds from the queue's database, whatever their age."""
    with psycopg.connect(queue_dsn(server), autocommit=True) as conn:
        found = _store.run(conn.cursor(), _store.horizon_holders(0.0))
    return [h for h in found if h.kind == kind]


def warned_of(caplog: Any, kind: str) -> list[logging.LogRecord]:
    """The long-transaction warnings about holders of ``kind``."""
    return [
        r for r in caplog.records
        if getattr(r, "action", None) == "long_transaction" and getattr(r, "kind", None) == kind
    ]  # fmt: skip


def fields(record: logging.LogRecord, *names: str) -> tuple[Any, ...]:
    """The values of a warning's fields ``names``."""
    return tuple(vars(record)[name] for name in names)


def suggested(record: logging.LogRecord, before: str, after: str = "") -> str:
    """The statement a warning tells the operator to run: what its message holds between
    ``before`` and ``after`` (or the end)."""
    rest = record.getMessage().split(before, 1)[1]
    return rest.split(after, 1)[0] if after else rest


async def test_a_prepared_transaction_is_named_until_it_is_rolled_back(
    primary: PrivateServer, warnings: Any
) -> None:
    """A prepared transaction that wrote, in another database, is named once with its gid,
    database and the statement that ends it; that statement works, and then nothing holds."""
    with psycopg.connect(primary.dsn, autocommit=True) as other:  # database 'postgres'
        other.execute("CREATE TABLE ledger (n int)")
        other.execute("BEGIN")
        other.execute("INSERT INTO ledger VALUES (1)")
        other.execute("PREPARE TRANSACTION 'nightly''s batch'")
        await asyncio.sleep(OPEN_FOR)
        await maintain(pgqueue.PgQueue(queue_dsn(primary)), passes=2)
        [record] = warned_of(warnings, "prepared")
        assert fields(record, "gid", "database", "pid") == ("nightly's batch", "postgres", None)
        assert fields(record, "open_s")[0] >= OPEN_FOR
        [held] = holders(primary, "prepared")
        assert (held.name, held.database, held.every_database) == (
            "nightly's batch", "postgres", True
        )  # fmt: skip
        rollback = suggested(record, "run ", " in database postgres")
        assert rollback == "ROLLBACK PREPARED 'nightly''s batch'"
        other.execute(rollback)  # type: ignore[arg-type]
        assert holders(primary, "prepared") == []
        assert other.execute("SELECT count(*) FROM ledger").fetchone() == (0,)


@contextlib.contextmanager
def snapshot_on(standby: PrivateServer, primary: PrivateServer) -> Iterator[None]:
    """Keep a report's snapshot open on ``standby`` while the primary writes on, so that the
    standby's xmin, fed back, lags; closing the connection ends it (the standby may be gone)."""
    with contextlib.closing(psycopg.connect(standby.dsn)) as report:
        report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        report.execute("SELECT count(*) FROM pg_class")
        write_on(primary)
        yield


def write_on(primary: PrivateServer) -> None:
    """Commit three transactions on ``primary`` that each take a transaction id."""
    for _ in range(3):
        query(queue_dsn(primary), "SELECT txid_current()")


async def test_a_slot_is_named_while_its_standby_holds_a_snapshot_and_once_abandoned(
    primary: PrivateServer, warnings: Any
) -> None:
    """A standby with hot_standby_feedback holds its slot's xmin while a query there keeps a
    snapshot: the slot is named with its standby's walsender. Once the query ends, it holds
    nothing. A slot left behind by a standby that is gone is named with the statement that
    drops it; that statement works."""
    app = pgqueue.PgQueue(queue_dsn(primary))
    slot_xmin = "SELECT xmin FROM pg_replication_slots WHERE slot_name = 'reports'"
    standby = PrivateServer(*STANDBY, primary=primary, slot="reports")
    try:
        wait_for(lambda: query(primary.dsn, slot_xmin)[0][0], 10, "the standby's first feedback")
        wait_for(lambda: not holders(primary, "slot"), 10, "an idle standby to hold nothing")
        with snapshot_on(standby, primary):
            [held] = wait_for(lambda: holders(primary, "slot"), 10, "the slot's xmin to lag")
            await maintain(app, passes=2, pause=OPEN_FOR)
        [record] = warned_of(warnings, "slot")
        assert fields(record, "slot", "pid") == ("reports", held.pid)
        assert None not in (held.pid, held.xmin) and held.every_database
        assert f"has held xmin {held.xmin} " in record.getMessage()
        assert "the standby that uses it (walsender pid" in record.getMessage()
        wait_for(lambda: not holders(primary, "slot"), 10, "the slot's xmin to move on")
        with snapshot_on(standby, primary):
            wait_for(lambda: holders(primary, "slot"), 10, "the slot's xmin to lag again")
            standby.stop()
    finally:
        standby.destroy()
    warnings.clear()
    await maintain(app, passes=2, pause=OPEN_FOR)
    [record] = warned_of(warnings, "slot")
    assert fields(record, "slot", "pid") == ("reports", None)
    drop = suggested(record, "drop it with ")
    assert drop == "SELECT pg_drop_replication_slot('reports')"
    query(primary.dsn, drop)
    assert holders(primary, "slot") == []


async def test_a_standby_without_a_slot_is_named_while_a_query_there_holds_a_snapshot(
    primary: PrivateServer, warnings: Any
) -> None:
    """A standby connected without a slot feeds its xmin back through its walsender: named,
    with the walsender's pid and the standby's name, while a query there keeps a snapshot; not
    while its xmin only echoes a transaction of the primary, which is named instead."""
    standby = PrivateServer(*STANDBY, "cluster_name=reports", primary=primary)
    walsender_xmin = ("SELECT backend_xmin::text::bigint FROM pg_stat_activity "
                      "WHERE backend_type = 'walsender' AND backend_xmin IS NOT NULL")  # fmt: skip
    try:
        wait_for(lambda: query(primary.dsn, walsender_xmin), 10, "the standby's first feedback")
        wait_for(lambda: not holders(primary, "standby"), 10, "an idle standby to hold nothing")
        with psycopg.connect(queue_dsn(primary)) as writer:
            [(xid,)] = writer.execute("SELECT txid_current() % 4294967296").fetchall()
            write_on(primary)
            wait_for(lambda: query(primary.dsn, walsender_xmin) == [(xid,)], 10, "the echo")
            assert holders(primary, "standby") == []
            assert [h.pid for h in holders(primary, "transaction")] == [writer.info.backend_pid]
        with snapshot_on(standby, primary):
            [held] = wait_for(lambda: holders(primary, "standby"), 10, "the standby's xmin to lag")
            await maintain(pgqueue.PgQueue(queue_dsn(primary)), passes=2, pause=OPEN_FOR)
        wait_for(lambda: not holders(primary, "standby"), 10, "the standby's xmin to move on")
    finally:
        standby.destroy()
    [record] = warned_of(warnings, "standby")
    assert fields(record, "pid") == (held.pid,)
    assert (held.application, held.client, held.every_database) == ("reports", "127.0.0.1", True)
    named = f"(walsender pid {held.pid}, application 'reports', client 127.0.0.1)"
    assert named in record.getMessage()
    assert f"has held xmin {held.xmin} " in record.getMessage()


async def test_metrics_count_a_slot_from_when_they_first_saw_its_xmin(
    primary: PrivateServer,
) -> None:
    """pgqueue_oldest_transaction_seconds covers a lagging slot, which has no start time: the
    seconds since the worker's metrics first saw it hold the same xmin."""
    pytest.importorskip("prometheus_client")
    from pgqueue._metrics import WorkerMetrics

    worker = pgqueue.PgQueue(queue_dsn(primary)).worker()
    metrics = WorkerMetrics(worker)
    standby = PrivateServer(*STANDBY, primary=primary, slot="reports")
    try:
        with snapshot_on(standby, primary):
            wait_for(lambda: holders(primary, "slot"), 10, "the slot's xmin to lag")
            ages = []
            for pause in (0, OPEN_FOR):
                await asyncio.sleep(pause)
                await metrics.refresh()
                ages.append(metrics.registry.get_sample_value("pgqueue_oldest_transaction_seconds"))
    finally:
        standby.destroy()
        await worker._close_connections()
    assert ages[0] == 0 and OPEN_FOR <= ages[1] < 60
