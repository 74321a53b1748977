"""The database's own limits, measured with bare SQL and no framework."""

from __future__ import annotations

import json
import time

import psycopg

from bench import _env, _sql


def claim_ack_loop(dsn: str, n: int, batch: int = 100, synchronous_commit: bool = True) -> float:
    """Jobs/s of one connection claiming ``batch`` rows (SKIP LOCKED) and deleting them."""
    options = "" if synchronous_commit else "-c synchronous_commit=off"
    _env.execute(dsn, "TRUNCATE bench.bare_jobs")
    _env.execute(dsn, _sql.BARE_FILL, [n])
    _env.execute(dsn, "VACUUM ANALYZE bench.bare_jobs")
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
