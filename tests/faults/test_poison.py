"""Scenario 6: a job that kills its worker is bounded by max_attempts; other jobs keep flowing."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.faults.harness import Fleet, all_done, verdict, wait_for
from tests.faults.ledger_app import poison_main, poison_process, slow_record
from tests.helpers import query

LEASE, RESCUE = 1.5, 0.3
FLOW = 600  # 0.1 s jobs, 2 workers x 10 slots: a few seconds of steady flow


def _enqueue_flow(dsn: str, poison: Any = None) -> int | None:
    with psycopg.connect(dsn) as conn:
        slow_record.enqueue_many(conn, [((1,), {}) for _ in range(FLOW)])
        poison_id = poison.enqueue(conn) if poison is not None else None
        conn.commit()
    return poison_id


def _rate(dsn: str) -> float:
    """Jobs per second recorded in the ledger, first to last, then clear it for the next round."""
    [(count, seconds)] = query(
        dsn, "SELECT count(*), extract(epoch FROM max(at) - min(at)) FROM fault_ledger"
    )
    query(dsn, "TRUNCATE fault_ledger")
    return float(count) / max(float(seconds), 0.001)


def _supervise(fleet: Fleet, dsn: str, total: int) -> int:
    """Restart dead workers (like systemd would) until ``total`` jobs are final; restarts made."""
    replaced: set[str] = set()

    def check() -> bool:
        for worker in list(fleet.workers):
            if not worker.alive and worker.name not in replaced:
                replaced.add(worker.name)
                fleet.start(f"{worker.name}-r{len(replaced)}", lease=LEASE, rescue=RESCUE)
        return all_done(dsn, total)()

    wait_for(check, 120, f"{total} jobs to finish")
    return len(replaced)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["main", "process"])
def test_poison_job_fails_as_worker_lost_after_max_attempts(
    ledger_dsn: str, fleet: Fleet, where: str
) -> None:
    """A job that kills its own worker ends failed, 'worker lost', after max_attempts."""
    for name in ("a", "b"):
        fleet.start(name, lease=LEASE, rescue=RESCUE)
    _enqueue_flow(ledger_dsn)
    _supervise(fleet, ledger_dsn, FLOW)
    baseline = _rate(ledger_dsn)
    poison = poison_main if where == "main" else poison_process
    poison_id = _enqueue_flow(ledger_dsn, poison)
    restarts = _supervise(fleet, ledger_dsn, 2 * FLOW + 1)
    flapping = _rate(ledger_dsn)
    [(state, attempts, last_error)] = query(
        ledger_dsn, "SELECT state, attempts, last_error FROM pgqueue.jobs WHERE id = %s",
        [poison_id])  # fmt: skip
    others = verdict(ledger_dsn, slow_record.name)
    print(json.dumps({"scenario": 6, "where": where, "baseline_jobs_per_s": round(baseline, 1),
                      "with_poison_jobs_per_s": round(flapping, 1),
                      "ratio": round(flapping / baseline, 2), "worker_restarts": restarts,
                      "poison_attempts": attempts}))  # fmt: skip
    assert (state, attempts, last_error) == ("failed", 3, "worker lost")
    assert others.states == {"succeeded": 2 * FLOW, "failed": 1}
    assert restarts == (3 if where == "main" else 0)
