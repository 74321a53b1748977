"""A worker warns of transactions that keep the queue's dead row versions from being removed."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import run_worker_until

OPEN_FOR = 0.3  # seconds each held transaction is open before a pass; the tests warn at 0.2


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


async def maintain(app: pgqueue.PgQueue, passes: int = 1, warn_after: float = 0.2) -> None:
    """Run ``passes`` maintenance passes of one new worker, then close its connections."""
    worker = app.worker(long_transaction_warning=warn_after)
    try:
        for _ in range(passes):
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
