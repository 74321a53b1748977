"""Scenario 1: many workers, many jobs, no faults: the ledger sees every job exactly once."""

from __future__ import annotations

import json
import time

import pytest

from tests.faults.harness import Fleet, all_done, enqueue_records, verdict, wait_for
from tests.helpers import query

JOBS = 20_000
WORKERS = 8


@pytest.mark.slow
def test_eight_workers_run_every_job_once(ledger_dsn: str, fleet: Fleet) -> None:
    """8 processes (6 batch-claiming, 2 claiming one at a time): 0 lost, 0 duplicates."""
    enqueue_records(ledger_dsn, JOBS)
    began = time.monotonic()
    for i in range(WORKERS):
        # Two workers with -c 1 claim one job per statement; six with -c 25 claim batches.
        fleet.start(f"w{i}", concurrency=1 if i < 2 else 25, lease=10, rescue=1)
    wait_for(all_done(ledger_dsn, JOBS), 240, f"{JOBS} jobs to finish")
    elapsed = time.monotonic() - began
    result = verdict(ledger_dsn)
    print(json.dumps({"scenario": 1, "seconds": round(elapsed, 1),
                      "jobs_per_s": round(JOBS / elapsed), **result.as_dict()}))  # fmt: skip
    assert (result.jobs, result.lost, result.duplicates, result.reruns) == (JOBS, 0, 0, 0)
    assert result.states == {"succeeded": JOBS}
    retried = query(ledger_dsn, "SELECT id, errors FROM pgqueue.jobs WHERE attempts <> 1")
    assert retried == []  # shows what ended each extra attempt if it fails
    assert all(w.alive for w in fleet.workers)
    by_worker = dict(query(ledger_dsn, "SELECT worker_id, count(*) FROM pgqueue.jobs GROUP BY 1"))
    assert by_worker["w0"] and by_worker["w1"], "the single-claim workers ran jobs too"
