"""Scale scenarios: drain against a big backlog and history, churn, and a worker's footprint."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from typing import Any

import psycopg

from bench import _env, _sql, latency, tasks, throughput


def drain_slice(dsn: str, n: int, name: str) -> float:
    """Jobs/s of one worker that runs ``n`` jobs of whatever is queued, then stops itself."""
    proc = _env.start_worker(dsn, "--concurrency", "100", "--name", name, stop_after=n)
    try:
        proc.wait(600)
    finally:
        _env.stop_worker(proc)
    count, seconds = _env.execute(dsn, _sql.DRAIN_SPAN, [name])[0]
    return int(count) / float(seconds)


def backlog(
    admin: str, dsn: str, n: int, queued: int, finished: int, slices: int = 3
) -> dict[str, Any]:
    """Drain rate of ``n`` jobs from a small table, and with a big backlog and history.

    The two sides live in two databases of one server, and their slices alternate, each after a
    CHECKPOINT: this machine's speed drifts by tens of percent over minutes, and measuring one
    side after the other (as the bench did before) put that drift into the ratio.
    """
    # Every slice of the backlog side must find its jobs queued, or its worker never reaches
    # its stop count and the bench hangs (--quick queues 20,000 jobs, not three slices of
    # 20,000). A worker stopping itself still finishes the batch it holds: keep 1,000 spare.
    n = min(n, queued // slices - 1000)
    if n < 1:
        raise ValueError(f"{queued} queued jobs cannot fill {slices} slices: raise --scale")
    _env.reset(dsn)
    for start in range(1, finished + 1, 1_000_000):
        _env.execute(dsn, _sql.HISTORY_FILL, [start, min(finished, start + 999_999)])
    _env.fill_jobs(dsn, queued)
    _env.execute(dsn, "VACUUM ANALYZE pgqueue.active_jobs, pgqueue.finished_jobs")
    empty: list[float] = []
    loaded: list[float] = []
    with _env.bench_database(admin) as small:
        _env.fill_jobs(small, slices * n + 1000)
        for i in range(slices):
            sides = [(small, empty, "empty"), (dsn, loaded, "backlog")]
            for where, rates, name in sides if i % 2 == 0 else sides[::-1]:
                _env.checkpoint(where)  # measure the claim path, not the last write-back
                rates.append(drain_slice(where, n, f"bench-{name}-{i}"))
    ratio = statistics.median(loaded) / statistics.median(empty)
    return {"empty_jobs_s": empty, "backlog_jobs_s": loaded, "ratio": ratio}


def held_snapshot(dsn: str, n: int, samples: int, pairs: int = 2) -> dict[str, Any]:
    """Jobs/s of two worker processes draining ``n`` jobs beside a snapshot held open in the
    queue's database, against the same drain without one; then the enqueue→start latency
    p50 of an idle worker once it has drained ``n`` jobs beside such a snapshot, against the
    same worker on a clean table. Each in pairs, in alternating order."""
    free: list[float] = []
    held: list[float] = []
    for i in range(pairs):
        sides = [(free, False), (held, True)]
        for rates, hold in sides if i % 2 == 0 else sides[::-1]:
            _env.checkpoint(dsn)
            drain = throughput.drain_beside_snapshot if hold else throughput.drain
            rates.append(drain(dsn, n, 2))
    ratio = statistics.median(held) / statistics.median(free)
    free_ms: list[float] = []
    held_ms: list[float] = []
    free_p99: list[float] = []
    held_p99: list[float] = []
    for i in range(pairs):
        dead_sides = [(free_ms, free_p99, 0), (held_ms, held_p99, n)]
        for p50s, p99s, dead in dead_sides if i % 2 == 0 else dead_sides[::-1]:
            _env.checkpoint(dsn)
            lat = latency.enqueue_to_start(dsn, samples, dead=dead)
            p50s.append(statistics.median(lat["from_commit_done"]))
            p99s.append(statistics.quantiles(lat["from_commit_done"], n=100)[98])
    return {
        "jobs": n, "free_jobs_s": free, "held_jobs_s": held, "ratio": ratio,
        "latency_free_p50_ms": free_ms, "latency_held_p50_ms": held_ms,
        "latency_ratio": statistics.median(held_ms) / statistics.median(free_ms),
        "latency_free_p99_ms": free_p99, "latency_held_p99_ms": held_p99,
    }  # fmt: skip


def scheduled(dsn: str, n: int, later: int, samples: int, pairs: int = 2) -> dict[str, Any]:
    """Jobs/s of one worker draining ``n`` due jobs behind ``later`` jobs due tomorrow at a
    higher priority, against the same drain without them; then the enqueue→start latency
    p50 of an idle worker of a queue holding ``later`` jobs due tomorrow at its jobs' own
    priority, against one without. Each in pairs, in alternating order. Claims from the head
    step over such jobs; the worker switches to claims that skip them."""
    clean: list[float] = []
    behind: list[float] = []
    for i in range(pairs):
        sides = [(clean, 0), (behind, later)]
        for rates, count in sides if i % 2 == 0 else sides[::-1]:
            _env.reset(dsn)
            if count:
                _env.schedule_jobs(dsn, count, 5)
            _env.fill_jobs(dsn, n)
            _env.checkpoint(dsn)
            rates.append(drain_slice(dsn, n, f"bench-scheduled-{i}-{count}"))
    clean_ms: list[float] = []
    later_ms: list[float] = []
    for i in range(pairs):
        lat_sides = [(clean_ms, 0), (later_ms, later)]
        for p50s, count in lat_sides if i % 2 == 0 else lat_sides[::-1]:
            _env.checkpoint(dsn)
            lat = latency.enqueue_to_start(dsn, samples, later=count)
            p50s.append(statistics.median(lat["from_commit_done"]))
    _env.reset(dsn)
    return {
        "jobs": n, "later": later, "clean_jobs_s": clean, "behind_jobs_s": behind,
        "ratio": statistics.median(behind) / statistics.median(clean),
        "latency_clean_p50_ms": clean_ms, "latency_later_p50_ms": later_ms,
        "latency_ratio": statistics.median(later_ms) / statistics.median(clean_ms),
    }  # fmt: skip


def churn(dsn: str, total: int, batch: int = 10_000) -> dict[str, object]:
    """Push ``total`` jobs through one worker; sample the claim path's size as they pass."""
    _env.reset(dsn)
    samples: list[dict[str, float]] = []
    worker = _env.start_worker(dsn, "--concurrency", "100", "--name", "bench-churn")
    started = time.monotonic()
    try:
        with psycopg.connect(dsn) as conn:
            for sent in range(0, total, batch):
                _wait_below(dsn, 2 * batch)
                tasks.noop.enqueue_many(conn, [((i,), {}) for i in range(batch)])
                conn.commit()
                if (sent // batch) % max(1, total // batch // 10) == 0:
                    samples.append(_claim_path(dsn, sent, started))
        _env.wait_drained(dsn, interval=0.2)
        samples.append(_claim_path(dsn, total, started))
        time.sleep(5)  # give autovacuum a chance to pass over the drained table
        samples.append(_claim_path(dsn, total, started))
    finally:
        _env.stop_worker(worker)
    return {"jobs": total, "samples": samples}


def _wait_below(dsn: str, limit: int) -> None:
    _env.wait_for_value(dsn, _sql.ACTIVE_COUNT, lambda left: left < limit, 600, 0.05)


def _claim_path(dsn: str, passed: int, started: float) -> dict[str, float]:
    live, dead, table, indexes, vacuums = _env.execute(dsn, _sql.CLAIM_PATH_SIZE)[0]
    return {
        "jobs_passed": passed, "seconds": round(time.monotonic() - started, 1),
        "live_tuples": live, "dead_tuples": dead, "table_kb": table // 1024,
        "indexes_kb": indexes // 1024, "autovacuums": vacuums,
    }  # fmt: skip


def footprint(dsn: str) -> dict[str, object]:
    """Seconds from process start to the first job's start, and RSS once idle.

    Measured as an installed pgqueue starts: pip compiles a package's bytecode when it installs
    it, but a checkout run with PYTHONDONTWRITEBYTECODE set (these machines set it) compiles
    pgqueue from source at every start (its modules take about 0.1 s to compile on a slow
    host). A first, unmeasured start writes the bytecode to a cache of the bench's own
    (PYTHONPYCACHEPREFIX); the start in the environment as inherited is reported beside it
    (``first_job_s_env``).
    """
    with tempfile.TemporaryDirectory(prefix="pgqueue-bench-pyc-") as cache:
        # An empty PYTHONDONTWRITEBYTECODE counts as unset (python(1)).
        compiled = {"PYTHONPYCACHEPREFIX": cache, "PYTHONDONTWRITEBYTECODE": ""}
        _first_job(dsn, compiled, idle=False)  # writes the cache
        first, rss, heavy = _first_job(dsn, compiled, idle=True)
    first_env = _first_job(dsn, {}, idle=False)[0]
    return {"first_job_s": first, "idle_rss_mb": rss, "heavy_imports": heavy,
            "first_job_s_env": first_env}  # fmt: skip


def _first_job(dsn: str, env: dict[str, str], idle: bool) -> tuple[float, float, list[str]]:
    """(seconds from spawning a worker to its first job's start, its RSS after two idle
    seconds if ``idle`` else NaN, the heavy modules it imported)."""
    _env.reset(dsn)
    with psycopg.connect(dsn) as conn:
        job_id = tasks.stamp.enqueue(conn)
        conn.commit()
    spawned = time.time()
    proc = _env.start_worker(dsn, "--name", "bench-footprint", env_extra=env)
    try:
        done = "SELECT result FROM pgqueue.finished_jobs WHERE id = %s"
        _env.wait_for(lambda: _env.execute(dsn, done, [job_id]), 30, 0.01)
        started, heavy = _env.execute(dsn, done, [job_id])[0][0]
        rss = math.nan
        if idle:
            time.sleep(2)
            rss = _rss_mb(proc.pid)
    finally:
        _env.stop_worker(proc)
    return started - spawned, rss, heavy


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
