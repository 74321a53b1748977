"""A transaction left open holds the queue back, and the worker names it.

PGQUEUE_DSN=postgresql://... python long_transaction.py

While a transaction keeps a snapshot of the queue's database (or one of any database has
written and not ended), PostgreSQL cannot remove the row versions that claims and finished
jobs leave behind, and a claim from the head of the queue steps over all of them. The worker
sees its claims walk those entries and resumes each claim where its last one ended, so the
drain keeps most of its rate; once it has caught up, it resumes too and looks for jobs behind
its point once a second on another connection, so a job sent alone still starts within about
a millisecond or two. The table
and its indexes still grow until the transaction ends. This drains the same jobs twice, then
sends 50 jobs one at a time, the second time with a "nightly report" idle in its
transaction, and prints the warning a worker logs when such a transaction has been open for
``long_transaction_warning`` seconds (60 by default).

Needs PGQUEUE_DSN: a database where `pgqueue migrate` ran.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import psycopg

import pgqueue

QUEUE = "long_transaction"  # its own: other jobs in the database neither wait nor get claimed
app = pgqueue.PgQueue(default_queue=QUEUE)


@app.task(name="long_transaction.noop")
async def noop(i: int) -> None:
    """Do nothing: the drain measures the queue, not the task."""


@app.task(name="long_transaction.stamp")
async def stamp() -> float:
    """When the job started, by this host's clock."""
    return time.time()


class Warnings(logging.Handler):
    """Keeps the worker's long-transaction warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "long_transaction":
            self.messages.append(record.getMessage())


async def drain(dsn: str, jobs: int, warnings: Warnings | None = None) -> tuple[float, float]:
    """Seconds for a worker to run ``jobs`` no-op jobs, then the median milliseconds from
    COMMIT to start of 50 jobs sent one at a time; given ``warnings``, wait up to 10 s for
    the worker's first one."""
    worker = app.worker(dsn=dsn, concurrency=200, long_transaction_warning=1.0, rescue_interval=0.2)
    running = asyncio.create_task(worker.run())
    empty = "SELECT NOT EXISTS (SELECT FROM pgqueue.active_jobs WHERE queue = %s)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        with conn.transaction():
            noop.enqueue_many(conn, [((i,), {}) for i in range(jobs)])
        while not conn.execute(empty, [QUEUE]).fetchone()[0]:  # type: ignore[index]
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - start
        sent = {}
        for _ in range(50):
            job_id = stamp.enqueue(conn)  # autocommit: this statement is its transaction
            sent[job_id] = time.time()
            await asyncio.sleep(0.02)
        while not conn.execute(empty, [QUEUE]).fetchone()[0]:  # type: ignore[index]
            await asyncio.sleep(0.01)
        rows = conn.execute("SELECT id, result FROM pgqueue.jobs WHERE id = ANY(%s)", [list(sent)])
        waits = sorted((float(started) - sent[job_id]) * 1000 for job_id, started in rows)
    deadline = time.monotonic() + 10
    while warnings is not None and not warnings.messages and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    worker.stop()
    await running
    return seconds, waits[len(waits) // 2]


async def main(dsn: str, jobs: int = 50_000) -> list[str]:
    """Drain twice, the second time beside an idle transaction; return what to print."""
    warnings = Warnings()
    logging.getLogger("pgqueue.worker").addHandler(warnings)
    seconds, median = await drain(dsn, jobs)
    lines = [f"nothing held open: {jobs} jobs in {seconds:.2f} s, then one at a time: "
             f"{median:.1f} ms from commit to start (median)"]  # fmt: skip
    with psycopg.connect(dsn, application_name="nightly-report") as report:
        # One snapshot for the whole transaction, as pg_dump and many reports take; a
        # transaction that has written anything holds back the same way, in any database.
        report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        report.execute("SELECT count(*) FROM pgqueue.jobs")  # and then it waits for something
        await asyncio.sleep(1.0)
        seconds, median = await drain(dsn, jobs, warnings)
        lines.append(f"a report idle in its transaction: {jobs} jobs in {seconds:.2f} s, then "
                     f"one at a time: {median:.1f} ms from commit to start (median)")  # fmt: skip
    lines += [f"worker warned: {message}" for message in warnings.messages]
    return lines


if __name__ == "__main__":
    for line in asyncio.run(main(os.environ["PGQUEUE_DSN"])):
        print(line)
