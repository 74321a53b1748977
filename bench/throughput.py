"""Throughput scenarios: drain, enqueue_many and single transactional enqueue."""

from __future__ import annotations

import time

import psycopg

from bench import _env, _sql, tasks

# Twice the claim batch (100): one batch runs while the next is claimed (docs/performance.md).
DRAIN_CONCURRENCY = 200


def drain(
    dsn: str, n: int, processes: int = 1, concurrency: int = DRAIN_CONCURRENCY, *options: str
) -> float:
    """Jobs/s for ``processes`` idle workers to run ``n`` no-op jobs queued in one commit.

    Timed by the database clock, from the first claim to the last ack.
    """
    _env.reset(dsn)
    workers = [
        _env.start_worker(
            dsn, "--concurrency", str(concurrency), "--name", f"bench-drain-{i}", *options
        )
        for i in range(processes)
    ]
    try:
        registered = "SELECT count(*) FROM pgqueue.worker_processes"
        _env.wait_for(lambda: _env.execute(dsn, registered)[0][0] == processes, 30)
        _env.fill_jobs(dsn, n)
        _env.wait_for(lambda: _env.execute(dsn, _sql.ACTIVE_COUNT)[0][0] == 0, 600, 0.1)
    finally:
        for proc in workers:
            _env.stop_worker(proc)
    count, seconds = _env.execute(dsn, _sql.DRAIN_SPAN, ["bench-drain-%"])[0]
    assert count == n, f"drained {count} of {n}"
    return n / float(seconds)


def enqueue_many(dsn: str, n: int) -> float:
    """Jobs/s of one ``enqueue_many`` call of ``n`` jobs plus its COMMIT."""
    _env.execute(dsn, "TRUNCATE pgqueue.active_jobs")
    calls = [((i,), {}) for i in range(n)]
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        ids = tasks.noop.enqueue_many(conn, calls)
        conn.commit()
        elapsed = time.perf_counter() - start
    assert len(ids) == n
    _env.execute(dsn, "TRUNCATE pgqueue.active_jobs")
    return n / elapsed


def single_enqueue(conn: psycopg.Connection[object], n: int) -> float:
    """Seconds per transaction of one ``enqueue`` + COMMIT."""
    start = time.perf_counter()
    for i in range(n):
        tasks.noop.enqueue(conn, i)
        conn.commit()
    return (time.perf_counter() - start) / n
