"""examples/periodic.py and examples/unique_jobs.py do what their docs say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import query

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def env_for(dsn: str) -> dict[str, str]:
    """This environment without PGQUEUE_ settings, plus the test database as PGQUEUE_DSN."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    return {**env, "PGQUEUE_DSN": dsn, "PGQUEUE_LOG_LEVEL": "warning"}


def run(dsn: str, *args: str) -> str:
    """Run a command in examples/ with the test database as PGQUEUE_DSN; returns stdout."""
    env = env_for(dsn)
    done = subprocess.run([sys.executable, *args], cwd=EXAMPLES, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_unique_jobs_example(dsn: str) -> None:
    """unique_jobs.py: duplicates return the same job, raise on request, the key frees up."""
    lines = run(dsn, "unique_jobs.py").splitlines()
    first = query(dsn, "SELECT min(id) FROM pgqueue.jobs")[0][0]
    assert lines[0] == f"first enqueue: job {first}; second enqueue: job {first} (the same job)"
    assert lines[1] == f"on_conflict='raise': DuplicateJob, existing job {first}"
    assert lines[2].startswith(f"after job {first} finished: new job ")
    assert query(dsn, "SELECT state FROM pgqueue.jobs ORDER BY id") == [("succeeded",), ("queued",)]


def test_unique_jobs_example_leaves_other_apps_jobs_alone(dsn: str) -> None:
    """Its burst worker serves its own queue only: a job of another example (or of your app)
    waiting in queue "default" is not claimed and failed as an unknown task."""
    query(dsn, "SELECT pgqueue.enqueue('shop.ship', '[1]')")
    run(dsn, "unique_jobs.py")
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs WHERE task = 'shop.ship'") == [
        ("queued", 0)
    ]


def test_periodic_example_fires_heartbeats_that_know_their_tick(dsn: str) -> None:
    """periodic.py under a worker: heartbeat jobs report their own tick; cron list shows it."""
    shown = run(dsn, "periodic.py")
    assert "heartbeat: * * * * * */2 (UTC), last None" in shown
    assert "rates.refresh: */5 * * * * (UTC), last None" in shown
    assert shown.count("missed ticks: each") == 2 and "missed ticks: latest only" in shown
    assert "overlap yes, catch-up 21600 s, missed ticks: each" in shown  # reports.nightly
    env = env_for(dsn)
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--app", "periodic:app", "worker", "-q", "default"],
        cwd=EXAMPLES, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not query(dsn, "SELECT 1 FROM pgqueue.jobs WHERE state = 'succeeded'"):
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    [(result, tick)] = query(dsn, "SELECT result, meta->>'tick' FROM pgqueue.jobs"
                                  " WHERE state = 'succeeded' LIMIT 1")  # fmt: skip
    assert result == f"heartbeat for {tick[11:19]}"
    listing = run(dsn, "-m", "pgqueue", "--app", "periodic:app", "cron", "list")
    assert "heartbeat" in listing and "not in code" not in listing


def test_periodic_example_says_a_removed_schedule_catches_nothing_up(dsn: str) -> None:
    """periodic.py lists a schedule that has ticks but no code (removed) too: it said its
    missed ticks each run ("each"), where nothing fires it any more; it says "-", as cron list."""
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('old_sync', now())")
    [line] = [s for s in run(dsn, "periodic.py").splitlines() if s.startswith("old_sync:")]
    assert line.startswith("old_sync: -, last ")
    assert line.endswith(", next None, overlap -, catch-up -, missed ticks: -")
