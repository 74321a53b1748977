"""Cost of the completion notification (the statement trigger on finished_jobs), and how fast
``app.wait`` returns after a job finishes. Prints JSON.

    python bench/bench_completion_notify.py postgresql://postgres@127.0.0.1:5432/postgres

Drains N no-op jobs with a burst worker, alternating runs with the trigger enabled and
disabled, then measures the lag from a job's ack (its finished_at) to ``wait`` returning.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

import pgqueue

JOBS = 20_000
ROUNDS = 5
BATCH = 200  # rows per ack statement in the micro-benchmark
TRIGGER = "finished_jobs_notify_insert"


def make_app(dsn: str) -> pgqueue.PgQueue:
    """An app with one no-op async task."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    return app


def reset(dsn: str, trigger_on: bool) -> None:
    """Empty the job tables and switch the completion trigger on or off."""
    switch = "ENABLE" if trigger_on else "DISABLE"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE pgqueue.active_jobs, pgqueue.finished_jobs")
        conn.execute(sql.SQL("ALTER TABLE pgqueue.finished_jobs {} TRIGGER {}").format(
            sql.SQL(switch), sql.Identifier(TRIGGER)))  # fmt: skip
        conn.execute("VACUUM ANALYZE pgqueue.active_jobs, pgqueue.finished_jobs")


def drain(app: pgqueue.PgQueue, trigger_on: bool) -> float:
    """Jobs per second of a burst worker draining JOBS queued jobs."""
    reset(app.dsn, trigger_on)
    with psycopg.connect(app.dsn) as conn:
        app.using("noop").enqueue_many(conn, [((i,), {}) for i in range(JOBS)])
    worker = app.worker(concurrency=100, burst=True, batch_size=100)
    started = time.perf_counter()
    asyncio.run(worker.run())
    return JOBS / (time.perf_counter() - started)


def insert_cost(dsn: str, trigger_on: bool, statements: int = 300) -> float:
    """Microseconds per statement moving BATCH rows into finished_jobs (what an ack does)."""
    reset(dsn, trigger_on)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for n in range(statements):
            conn.execute(
                "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
                " attempts, max_attempts, run_at, created_at) SELECT i, 'default', 'noop', '[]',"
                " '{}', 'succeeded', 0, 1, 3, now(), now()"
                " FROM generate_series(%s::bigint, %s::bigint) AS i",
                [n * BATCH, n * BATCH + BATCH - 1],
            )
        return 1e6 * (time.perf_counter() - started) / statements


def trigger_time(dsn: str, statements: int = 50) -> float:
    """Median ms EXPLAIN ANALYZE attributes to the trigger on a BATCH-row insert."""
    reset(dsn, True)
    times = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n in range(statements):
            rows = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO pgqueue.finished_jobs (id, queue, task,"
                " args, kwargs, state, priority, attempts, max_attempts, run_at, created_at)"
                " SELECT i, 'default', 'noop', '[]', '{}', 'succeeded', 0, 1, 3, now(), now()"
                " FROM generate_series(%s::bigint, %s::bigint) AS i",
                [n * BATCH, n * BATCH + BATCH - 1],
            ).fetchall()
            plan = rows[0][0][0]
            times.append(sum(t["Time"] for t in plan.get("Triggers", [])))
    return float(statistics.median(times))


async def wait_lags(app: pgqueue.PgQueue, samples: int = 50) -> list[float]:
    """Seconds from each job's ack (finished_at, DB clock) to app.wait returning (DB clock)."""
    reset(app.dsn, True)
    worker = app.worker(poll_interval=5.0)
    runner = asyncio.create_task(worker.run())
    lags = []
    try:
        async with await psycopg.AsyncConnection.connect(app.dsn, autocommit=True) as conn:
            for i in range(samples):
                job_id = await app.using("noop").aenqueue(conn, i)
                await app.wait(job_id, timeout=10, poll_interval=60)
                cur = await conn.execute(
                    "SELECT extract(epoch FROM clock_timestamp() - finished_at)::float8"
                    " FROM pgqueue.jobs WHERE id = %s", [job_id])  # fmt: skip
                row: Any = await cur.fetchone()
                lags.append(row[0])
    finally:
        worker.stop()
        await runner
    return lags


def main(admin_dsn: str) -> None:
    """Create a scratch database, run the benchmark, drop the database."""
    name = f"pgqueue_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    try:
        pgqueue.migrate(dsn)
        app = make_app(dsn)
        rates: dict[str, list[float]] = {"trigger_on": [], "trigger_off": []}
        for _ in range(ROUNDS):
            rates["trigger_on"].append(drain(app, True))
            rates["trigger_off"].append(drain(app, False))
        costs: dict[str, list[float]] = {"trigger_on": [], "trigger_off": []}
        for _ in range(ROUNDS):
            costs["trigger_on"].append(insert_cost(dsn, True))
            costs["trigger_off"].append(insert_cost(dsn, False))
        trigger_ms = trigger_time(dsn)
        lags = sorted(asyncio.run(wait_lags(app)))
        cost_on = statistics.median(costs["trigger_on"])
        cost_off = statistics.median(costs["trigger_off"])
        on, off = statistics.median(rates["trigger_on"]), statistics.median(rates["trigger_off"])
        print(json.dumps({
            "jobs": JOBS, "rounds": ROUNDS,
            "drain_jobs_per_s": {k: [round(r) for r in v] for k, v in rates.items()},
            "median_on": round(on), "median_off": round(off),
            "notify_cost_percent": round(100 * (off - on) / off, 1),
            f"ack_statement_us_{BATCH}_rows": {"trigger_on": round(cost_on),
                                               "trigger_off": round(cost_off)},
            "trigger_us_per_statement": round(cost_on - cost_off),
            f"trigger_ms_per_{BATCH}_row_statement_explain": round(trigger_ms, 3),
            "wait_lag_ms": {"p50": round(1000 * lags[len(lags) // 2], 2),
                            "p90": round(1000 * lags[int(len(lags) * 0.9)], 2),
                            "max": round(1000 * lags[-1], 2)},
        }, indent=2))  # fmt: skip
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/postgres")
