"""Past one worker: many worker processes on one database; workers and the CLI behind PgBouncer."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.acceptance.conftest import ROOT, cli, cli_env, wait_for
from tests.acceptance.test_cli import enqueue
from tests.helpers import query, states


@pytest.mark.slow
def test_eight_workers_on_one_database_run_every_job_once(ledger: str, spawn_worker) -> None:
    """8 worker processes x 2,000 jobs: every job executed exactly once, by several processes."""
    ids = enqueue(ledger, "once", [(i,) for i in range(2000)])
    # Poll-only and one slot each keep 8 processes within a shared server's connections.
    workers = [spawn_worker("--burst", "--concurrency", "1", "--no-listen") for _ in range(8)]
    for w in workers:
        w.wait(timeout=300)
    assert [w.returncode for w in workers] == [0] * 8
    assert query(ledger, "SELECT count(*), count(DISTINCT job_id) FROM ledger") == [(2000, 2000)]
    assert query(ledger, "SELECT count(DISTINCT pid) > 2 FROM ledger") == [(True,)]
    assert states(ledger) == {"succeeded": 2000}
    assert query(ledger, "SELECT max(attempts), count(*) FROM pgqueue.jobs WHERE id = ANY(%s)",
                 [ids]) == [(1, 2000)]  # fmt: skip


def test_poll_only_worker_drains_through_pgbouncer_in_transaction_mode(
    ledger: str, pgbouncer: str
) -> None:
    """--no-listen keeps no session state, so a worker runs every job through PgBouncer."""
    enqueue(ledger, "once", [(i,) for i in range(300)])
    # The worker goes through PgBouncer (--dsn); the tasks' ledger connection stays direct.
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", pgbouncer, "worker", "--queues", "io",
         "--no-listen", "--burst", "--poll-interval", "0.1", "--concurrency", "4"],
        env=cli_env(ledger), cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "prepared statement" not in result.stderr
    assert states(ledger) == {"succeeded": 300}
    assert query(ledger, "SELECT count(DISTINCT job_id) FROM ledger") == [(300,)]


def test_poll_only_worker_runs_its_schedules_through_pgbouncer(dsn: str, pgbouncer: str) -> None:
    """A poll-only worker's scheduler goes through PgBouncer in transaction mode too (its
    connection prepares nothing: tests/integration/test_worker_sessions.py). Every-second
    schedules run for six seconds, then SIGTERM: ticks fired and ran, and nothing failed."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", pgbouncer, "--app",
         "tests.acceptance.periodic_app:app", "worker", "--no-listen", "--poll-interval", "0.1"],
        env=cli_env(dsn), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(6)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert "prepared statement" not in stderr and "Traceback" not in stderr, stderr
    fired = query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks WHERE name = 'beat'")
    assert fired[0][0] >= 4, stderr
    assert states(dsn).get("succeeded", 0) >= 3, stderr


FINISHED_LONG_AGO = """
INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority, attempts,
                                   max_attempts, run_at, created_at, finished_at)
SELECT 1000000 + g, 'io', 'old', '[]', '{}', 'succeeded', 0, 1, 3, now(), now(),
       now() - interval '2 days'
  FROM generate_series(1, %s) AS g
"""


def test_prune_through_pgbouncer_deletes_batch_after_batch(dsn: str, pgbouncer: str) -> None:
    """`pgqueue prune` runs one statement per batch of 1,000: through a transaction-mode pool
    every one goes through, whichever backend it reaches. (psycopg prepared the sixth on one
    backend and ran the seventh by name on another: 'prepared statement "_pg3_0" does not
    exist', and 1,500 jobs were left.)"""
    query(dsn, FINISHED_LONG_AGO, [7500])
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", pgbouncer, "prune", "--older-than", "1d"],
        env=cli_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "deleted 7500 finished jobs\n"), result.stderr
    assert query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs") == [(0,)]


def test_stats_watch_through_pgbouncer_keeps_refreshing(dsn: str, pgbouncer: str) -> None:
    """`pgqueue stats --watch` reads the same statement over and over on one connection:
    through a transaction-mode pool it goes on past the fifth refresh, after which psycopg
    used to prepare the statement on one backend and run it by name on another."""
    watch = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", pgbouncer, "stats", "--watch", "--json",
         "--interval", "0.1"],
        env=cli_env(dsn), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watch.stdout is not None
        lines = [line for _, line in zip(range(12), watch.stdout, strict=False)]
        assert lines == ["[]\n"] * 12, watch.communicate(timeout=30)[1]
        assert watch.poll() is None
    finally:
        watch.terminate()
        watch.communicate(timeout=30)


def test_poll_only_workers_cancel_and_rescue_through_pgbouncer(ledger: str, pgbouncer: str) -> None:
    """Without LISTEN, through a transaction-mode pool: a running job cancelled with `pgqueue
    jobs cancel` is stopped at its worker's next heartbeat, and the job of a worker killed
    with SIGKILL is rescued by another worker and runs again."""
    [doomed] = enqueue(ledger, "sleeps", [(600,)])
    [lost] = enqueue(ledger, "slow_first_attempt", [(600,)])
    command = [sys.executable, "-m", "pgqueue", "--dsn", pgbouncer, "worker", "--queues", "io",
               "--no-listen", "--poll-interval", "0.1", "--lease", "3",
               "--rescue-interval", "0.5"]  # fmt: skip
    first = subprocess.Popen(command, env=cli_env(ledger), cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: query(ledger, "SELECT count(*) FROM ledger") == [(2,)], 60, "both run")
        cancel = cli(pgbouncer, "jobs", "cancel", str(doomed))
        assert cancel.returncode == 0 and "is running" in cancel.stdout, cancel.stderr
        wait_for(lambda: job_state(ledger, doomed) == "cancelled", 60, "cancelled")
    finally:
        first.kill()
        _, first_err = first.communicate(timeout=30)
    second = subprocess.Popen(command, env=cli_env(ledger), cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: job_state(ledger, lost) == "succeeded", 60, "rescued")
    finally:
        second.send_signal(signal.SIGTERM)
        _, second_err = second.communicate(timeout=60)
    assert second.returncode == 0, second_err
    assert b"prepared statement" not in first_err + second_err, first_err + second_err
    assert query(ledger, "SELECT job_id, attempt FROM ledger ORDER BY job_id, attempt") == [
        (doomed, 1), (lost, 1), (lost, 2)
    ]  # fmt: skip


def job_state(dsn: str, job_id: int) -> str:
    """The state of job ``job_id``."""
    return str(query(dsn, "SELECT state FROM pgqueue.jobs WHERE id = %s", [job_id])[0][0])
