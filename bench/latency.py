"""Enqueue→start latency with an idle worker woken by NOTIFY."""

from __future__ import annotations

import time

import psycopg

from bench import _env, _sql, tasks


def enqueue_to_start(
    dsn: str, samples: int, gap: float = 0.02, dead: int = 0, later: int = 0
) -> dict[str, list[float]]:
    """Milliseconds from COMMIT to the task body starting, one job at a time.

    ``from_commit_sent`` counts the COMMIT itself; ``from_commit_done`` starts when it returned.
    With ``dead``, a snapshot is held open throughout and the worker first drains ``dead``
    jobs, whose claim-index entries then stay at the head of the queue. With ``later``, the
    queue holds that many jobs due tomorrow at the measured jobs' own priority.
    """
    _env.reset(dsn)
    if later:
        _env.schedule_jobs(dsn, later, 0)
    report = _env.hold_snapshot(dsn) if dead else None
    worker = _env.start_worker(dsn, "--name", "bench-latency")
    sent: list[tuple[int, float, float]] = []
    try:
        registered = "SELECT count(*) FROM pgqueue.worker_processes"
        _env.wait_for(lambda: _env.execute(dsn, registered)[0][0] == 1, 30)
        if dead:
            _env.fill_jobs(dsn, dead)
            _env.wait_drained(dsn)
        time.sleep(0.5)  # let the listener settle into its LISTEN
        with psycopg.connect(dsn) as conn:
            for _ in range(samples):
                job_id = tasks.stamp.enqueue(conn)
                before = time.time()
                conn.commit()
                sent.append((job_id, before, time.time()))
                time.sleep(gap)
        done = "SELECT count(*) FROM pgqueue.finished_jobs WHERE task = %s"
        _env.wait_for(lambda: _env.execute(dsn, done, [tasks.stamp.name])[0][0] == samples, 30)
    finally:
        _env.stop_worker(worker)
        if report is not None:
            report.close()
    started = {i: r[0] for i, r in _env.execute(dsn, _sql.RESULTS, [tasks.stamp.name])}
    return {
        "from_commit_sent": [(started[i] - t0) * 1000 for i, t0, _ in sent],
        "from_commit_done": [(started[i] - t1) * 1000 for i, _, t1 in sent],
    }
