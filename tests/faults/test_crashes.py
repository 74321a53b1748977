"""Scenario 2: a worker SIGKILLed at each stage of a job's life loses nothing and re-runs once."""

from __future__ import annotations

import json
import signal

import psycopg
import pytest

from tests.faults.harness import (
    Fleet,
    all_done,
    db_now,
    enqueue_records,
    pid_alive,
    verdict,
    wait_for,
)
from tests.faults.ledger_app import record_then_sleep
from tests.helpers import query

JOBS = 40
LEASE, RESCUE = 2.0, 0.5
# The rescuer claims within one poll of the sweep's NOTIFY; allow for process start-up too.
SLACK = 2.0


def _ledger_attempts(dsn: str) -> dict[int, list[int]]:
    rows = query(dsn, "SELECT job_id, array_agg(attempt ORDER BY attempt) FROM fault_ledger "
                      "WHERE kind = 'run' GROUP BY job_id")  # fmt: skip
    return dict(rows)


def _crash_then_recover(dsn: str, fleet: Fleet, stage: str) -> dict[str, object]:
    enqueue_records(dsn, JOBS)
    victim = fleet.start("victim", concurrency=5, lease=LEASE, rescue=RESCUE, fault=stage)
    assert victim.process.wait(60) == -signal.SIGKILL
    killed_at = db_now(dsn)
    fleet.start("rescuer", concurrency=5, lease=LEASE, rescue=RESCUE)
    wait_for(all_done(dsn, JOBS), 60, "every job to finish after the crash")
    [(recovered,)] = query(
        dsn, "SELECT extract(epoch FROM min(started_at) - %s) FROM pgqueue.jobs "
             "WHERE attempts = 2", [killed_at])  # fmt: skip
    result = verdict(dsn)
    figures = {"scenario": 2, "stage": stage, **result.as_dict(),
               "recovery_s": None if recovered is None else round(float(recovered), 2),
               "lease_plus_sweep_s": LEASE + RESCUE}  # fmt: skip
    print(json.dumps(figures))
    assert (result.jobs, result.lost, result.duplicates, result.running) == (JOBS, 0, 0, 0)
    assert result.states == {"succeeded": JOBS}
    assert query(dsn, "SELECT max(attempts) FROM pgqueue.jobs") == [(2,)] or stage == "after_ack"
    assert recovered is None or float(recovered) <= LEASE + RESCUE + SLACK
    return figures


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["after_claim", "mid_task"])
def test_killed_before_the_side_effect_runs_it_once_on_the_next_attempt(
    ledger_dsn: str, fleet: Fleet, stage: str
) -> None:
    """Killed after the claim or mid-task: attempt 2 runs it, attempt 1 left no trace."""
    _crash_then_recover(ledger_dsn, fleet, stage)
    reran = query(ledger_dsn, "SELECT id FROM pgqueue.jobs WHERE attempts = 2")
    assert reran, "the victim held jobs when it died"
    attempts = _ledger_attempts(ledger_dsn)
    assert all(attempts[job_id] == [2] for (job_id,) in reran)


@pytest.mark.slow
def test_killed_after_the_side_effect_runs_it_at_most_once_more(
    ledger_dsn: str, fleet: Fleet
) -> None:
    """Killed between the side effect and its ack: the job runs again once, as attempt 2."""
    _crash_then_recover(ledger_dsn, fleet, "after_side_effect")
    attempts = _ledger_attempts(ledger_dsn)
    assert [1, 2] in attempts.values()
    assert all(a in ([1], [2], [1, 2]) for a in attempts.values())


@pytest.mark.slow
def test_killed_after_the_ack_never_runs_the_acked_jobs_again(
    ledger_dsn: str, fleet: Fleet
) -> None:
    """Killed right after its outcomes committed: those jobs stay done, with one attempt."""
    _crash_then_recover(ledger_dsn, fleet, "after_ack")
    acked = query(ledger_dsn, "SELECT id, attempts FROM pgqueue.jobs WHERE worker_id = 'victim'")
    assert acked and all(attempts == 1 for _, attempts in acked)
    attempts = _ledger_attempts(ledger_dsn)
    assert all(attempts[job_id] == [1] for job_id, _ in acked)


@pytest.mark.slow
def test_process_task_dies_with_its_killed_worker_and_runs_again_elsewhere(
    ledger_dsn: str, fleet: Fleet
) -> None:
    """SIGKILL of a worker takes its process-pool child with it (no orphan keeps running the
    job while it is rescued and runs again), and a worker on the same host rescues the job
    at once, long before its lease could expire."""
    with psycopg.connect(ledger_dsn) as conn:
        job = record_then_sleep.enqueue(conn, 120)
        conn.commit()
    doomed = fleet.start("doomed", queues="cpu", lease=120, rescue=0.3)
    [(child,)] = wait_for(lambda: query(ledger_dsn, "SELECT pid FROM fault_ledger"), 60,
                          "the task to start in a child")  # fmt: skip
    fleet.start("heir", queues="cpu", lease=120, rescue=0.3)
    doomed.signal(signal.SIGKILL)
    wait_for(lambda: not pid_alive(child), 10, "the orphaned child to die")
    wait_for(lambda: query(ledger_dsn, "SELECT count(*) FROM fault_ledger")[0][0] == 2, 60,
             "attempt 2 to start on the other worker")  # fmt: skip
    [(attempts, error)] = query(ledger_dsn, "SELECT attempts, errors->0->>'error' "
                                "FROM pgqueue.jobs WHERE id = %s", [job])  # fmt: skip
    assert (attempts, error) == (2, "worker lost")
