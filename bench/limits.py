"""The database's own limits, measured with bare SQL and no framework."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.queues
import time
from typing import Any

import psycopg

from bench import _env, _sql

UNFLUSHED = "-c synchronous_commit=off"  # connection options: commits do not wait for the WAL


def _fill_bare(dsn: str, n: int) -> None:
    """``n`` queued rows in an otherwise empty, freshly analysed ``bench.bare_jobs``."""
    _env.execute(dsn, "TRUNCATE bench.bare_jobs")
    _env.execute(dsn, _sql.BARE_FILL, [n])
    _env.execute(dsn, "VACUUM ANALYZE bench.bare_jobs")


def claim_ack_loop(dsn: str, n: int, batch: int = 100, synchronous_commit: bool = True) -> float:
    """Jobs/s of one connection claiming ``batch`` rows (SKIP LOCKED) and deleting them."""
    options = "" if synchronous_commit else UNFLUSHED
    _fill_bare(dsn, n)
    done = 0
    with psycopg.connect(dsn, autocommit=True, options=options) as conn:
        start = time.perf_counter()
        while True:
            rows = conn.execute(_sql.BARE_CLAIM, [batch]).fetchall()
            if not rows:
                break
            conn.execute(_sql.BARE_ACK, [[r[0] for r in rows]])
            done += len(rows)
        elapsed = time.perf_counter() - start
    return done / elapsed


def claim_ack_fleet(dsn: str, n: int, processes: int, batch: int = 100) -> float:
    """Jobs/s of ``processes`` bare loops draining ``n`` rows together, each on two connections
    committing as a pgqueue worker does: claims flushed, acks (deletes) not.

    The reference for eight worker processes against two: what the database's own claim path
    does with more claimers at once, with nothing of pgqueue in it.
    """
    _fill_bare(dsn, n)
    _env.checkpoint(dsn)
    context = multiprocessing.get_context("spawn")
    go, ready, ends = context.Event(), context.Queue(), context.Queue()
    loops = [context.Process(target=_fleet_loop, args=(dsn, batch, go, ready, ends))
             for _ in range(processes)]  # fmt: skip
    for loop in loops:
        loop.start()
    try:
        for _ in loops:
            ready.get(timeout=60)
        start = time.perf_counter()
        go.set()
        # perf_counter is the system-wide monotonic clock: the loops' readings compare with it.
        last: float = max(ends.get(timeout=600) for _ in loops)
    finally:
        for loop in loops:
            loop.join(10)
            if loop.is_alive():
                loop.kill()
    return n / (last - start)


def _fleet_loop(dsn: str, batch: int, go: Any, ready: Any, ends: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as claim, \
            psycopg.connect(dsn, autocommit=True, options=UNFLUSHED) as ack:  # fmt: skip
        ready.put(True)
        go.wait()
        while rows := claim.execute(_sql.BARE_CLAIM, [batch], prepare=True).fetchall():
            ack.execute(_sql.BARE_ACK, [[r[0] for r in rows]], prepare=True)
    ends.put(time.perf_counter())


def copy_load(dsn: str, n: int) -> float:
    """Rows/s of one COPY of ``n`` jobs into pgqueue.active_jobs, commit included."""
    _env.execute(dsn, "TRUNCATE pgqueue.active_jobs")
    rows = [("default", "bench.tasks.noop", json.dumps([i]), "{}") for i in range(n)]
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(_sql.BARE_COPY) as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - start
    _env.execute(dsn, "TRUNCATE pgqueue.active_jobs")
    return n / elapsed


def insert_commit(conn: psycopg.Connection[object], n: int) -> float:
    """Seconds per transaction of one bare single-row INSERT + COMMIT."""
    start = time.perf_counter()
    for i in range(n):
        conn.execute(_sql.BARE_INSERT, [f"[{i}]"])
        conn.commit()
    return (time.perf_counter() - start) / n


def notify_claim_latency(dsn: str, samples: int, gap: float = 0.02) -> list[float]:
    """Milliseconds from a producer's COMMIT returning to a bare listener holding the claimed
    row: INSERT + NOTIFY, then LISTEN, claim (flushed commit) in another process.

    The same path as pgqueue's latency figure with nothing of pgqueue in it: what the database
    and this machine's process wake-ups cost on their own.
    """
    _env.execute(dsn, "TRUNCATE bench.bare_jobs")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    listener = context.Process(target=_bare_listener, args=(dsn, samples, results))
    listener.start()
    try:
        results.get(timeout=30)  # listening
        sent = []
        with psycopg.connect(dsn) as conn:
            for i in range(samples):
                conn.execute(_sql.BARE_INSERT_ONE, [f"[{i}]"])
                conn.execute(_sql.BARE_NOTIFY)
                conn.commit()
                sent.append(time.time())
                time.sleep(gap)
        claimed: list[float] = results.get(timeout=60)
    finally:
        listener.join(10)
        if listener.is_alive():
            listener.kill()
    return [(got - t) * 1000 for got, t in zip(claimed, sent, strict=True)]


def _bare_listener(dsn: str, samples: int, results: multiprocessing.queues.Queue[Any]) -> None:
    claimed: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as listen, \
            psycopg.connect(dsn, autocommit=True) as claim:  # fmt: skip
        listen.execute(_sql.BARE_LISTEN)
        results.put("listening")
        for _note in listen.notifies():  # leaving the loop closes the generator and its lock
            while rows := claim.execute(_sql.BARE_CLAIM, [100], prepare=True).fetchall():
                claimed.extend(time.time() for _ in rows)
                claim.execute(_sql.BARE_ACK, [[r[0] for r in rows]], prepare=True)
            if len(claimed) >= samples:
                break
    results.put(claimed)
