"""Throughput scenarios: drain, enqueue_many and single transactional enqueue."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import psycopg

from bench import _env, _sql, tasks

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc CPU time unit

# Twice the claim batch (100): one batch runs while the next is claimed (docs/performance.md).
DRAIN_CONCURRENCY = 200


def drain(
    dsn: str, n: int, processes: int = 1, concurrency: int = DRAIN_CONCURRENCY, *options: str
) -> float:
    """Jobs/s for ``processes`` idle workers to run ``n`` no-op jobs queued in one commit.

    Timed by the database clock, from the first claim to the last ack.
    """
    return _drain(dsn, n, processes, concurrency, options, cpu=False)[0]


def drain_cpu(dsn: str, n: int, processes: int) -> tuple[float, float]:
    """:func:`drain`, and the CPU time per job (µs) of the workers and their database backends.

    CPU time does not depend on how the machine's two cores were shared with whatever else
    ran, as a rate does: it tells whether more processes cost more work per job. Linux only
    (``/proc``); NaN elsewhere.
    """
    return _drain(dsn, n, processes, DRAIN_CONCURRENCY, (), cpu=True)


def drain_beside_snapshot(dsn: str, n: int, processes: int = 2) -> float:
    """:func:`drain`, while another session of the queue's database keeps a REPEATABLE READ
    snapshot open from before the jobs are queued, as a report left open would: none of the
    row versions the drain leaves behind can be removed until it ends."""
    return _drain(dsn, n, processes, DRAIN_CONCURRENCY, (), cpu=False, hold=True)[0]


def _drain(
    dsn: str,
    n: int,
    processes: int,
    concurrency: int,
    options: tuple[str, ...],
    cpu: bool,
    hold: bool = False,
) -> tuple[float, float]:
    _env.reset(dsn)
    report = _env.hold_snapshot(dsn) if hold else None
    workers = [
        _env.start_worker(
            dsn, "--concurrency", str(concurrency), "--name", f"bench-drain-{i}", *options
        )
        for i in range(processes)
    ]
    try:
        registered = "SELECT count(*) FROM pgqueue.worker_processes"
        _env.wait_for(lambda: _env.execute(dsn, registered)[0][0] == processes, 30)
        pids: list[int] = []
        if cpu:
            _env.checkpoint(dsn)  # each of a pair of drains starts from the same WAL state
            time.sleep(0.5)  # let start-up work finish: only the drain is counted
            pids = [w.pid for w in workers] + [r[0] for r in _env.execute(dsn, _sql.WORKER_PIDS)]
        before = _cpu_seconds(pids)
        _env.fill_jobs(dsn, n)
        _env.wait_drained(dsn)
        used = _cpu_seconds(pids) - before
    finally:
        for proc in workers:
            _env.stop_worker(proc)
        if report is not None:
            report.close()
    count, seconds = _env.execute(dsn, _sql.DRAIN_SPAN, ["bench-drain-%"])[0]
    assert count == n, f"drained {count} of {n}"
    return n / float(seconds), used / n * 1e6 if cpu else math.nan


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (NaN if one cannot be read)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def enqueue_many(dsn: str, n: int) -> float:
    """Jobs/s of one ``enqueue_many`` call of ``n`` jobs plus its COMMIT."""
    _env.execute(dsn, "TRUNCATE pgqueue.active_jobs")
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((i,), {}) for i in range(n)]
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
