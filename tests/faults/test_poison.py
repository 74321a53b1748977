"""Scenario 6: a job that kills its worker is bounded by max_attempts; other jobs keep flowing."""

from __future__ import annotations

import json
import os
from typing import Any

import psycopg
import pytest

from tests.faults.harness import Fleet, all_done, verdict, wait_for
from tests.faults.ledger_app import poison_main, poison_process, slow_record
from tests.helpers import query

LEASE, RESCUE = 1.5, 0.3
# 0.1 s jobs on 2 workers x 10 slots: about 8 s of steady flow. The poison job is claimed
# first; each retry goes behind the jobs already waiting, so it flaps until the flow ends, and
# the rate "while it flaps" is the rate from the flow's first job to the poison job's failure.
FLOW = 1600


def _enqueue_flow(dsn: str, poison: Any = None) -> int | None:
    with psycopg.connect(dsn) as conn:
        # The poison job goes first, so that it flaps while the other jobs flow.
        poison_id = poison.enqueue(conn) if poison is not None else None
        slow_record.enqueue_many(conn, [((1,), {}) for _ in range(FLOW)])
        conn.commit()
    return poison_id


def _rate(dsn: str, until: Any = None) -> tuple[float, float]:
    """Jobs per second recorded in the ledger from its first row to ``until`` (default: its
    last row), and that window's length; then clear the ledger for the next round."""
    [(count, seconds)] = query(dsn, """
        SELECT count(*) FILTER (WHERE at <= e.until),
               extract(epoch FROM least(max(at), e.until) - min(at))
          FROM fault_ledger, (SELECT coalesce(%s::timestamptz, 'infinity') AS until) AS e
         GROUP BY e.until""", [until])  # fmt: skip
    if os.environ.get("PGQUEUE_FAULTS_TIMELINE"):  # jobs per half second, to see the dips
        buckets = "SELECT count(*) FROM fault_ledger GROUP BY floor(extract(epoch FROM at) * 2)"
        print([n for (n,) in query(dsn, buckets + " ORDER BY min(at)")])
    query(dsn, "TRUNCATE fault_ledger")
    return float(count) / max(float(seconds), 0.001), float(seconds)


def _supervise(fleet: Fleet, dsn: str, total: int) -> int:
    """Restart dead workers (like systemd would) until ``total`` jobs are final; restarts made."""
    replaced: set[str] = set()

    def check() -> bool:
        for worker in list(fleet.workers):
            if not worker.alive and worker.name not in replaced:
                replaced.add(worker.name)
                fleet.start(f"{worker.name}-r{len(replaced)}", lease=LEASE, rescue=RESCUE)
        return all_done(dsn, total)()

    wait_for(check, 180, f"{total} jobs to finish")
    return len(replaced)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["main", "process"])
def test_poison_job_fails_as_worker_lost_after_max_attempts(
    ledger_dsn: str, fleet: Fleet, where: str
) -> None:
    """A job that kills its own worker ends failed, 'worker lost', after max_attempts.

    In the main process it takes its worker down once: the job's next attempts run isolated in
    a child process (their previous attempt lost its worker), which they kill instead.
    """
    for name in ("a", "b"):
        fleet.start(name, lease=LEASE, rescue=RESCUE)
    _enqueue_flow(ledger_dsn)
    _supervise(fleet, ledger_dsn, FLOW)
    baseline, _ = _rate(ledger_dsn)
    poison = poison_main if where == "main" else poison_process
    poison_id = _enqueue_flow(ledger_dsn, poison)
    restarts = _supervise(fleet, ledger_dsn, 2 * FLOW + 1)
    [(state, attempts, last_error, failed_at)] = query(ledger_dsn, """
        SELECT state, attempts, last_error, finished_at FROM pgqueue.jobs WHERE id = %s""",
        [poison_id])  # fmt: skip
    others = verdict(ledger_dsn, slow_record.name)
    flapping, window = _rate(ledger_dsn, until=failed_at)
    print(json.dumps({"scenario": 6, "where": where, "baseline_jobs_per_s": round(baseline, 1),
                      "while_flapping_jobs_per_s": round(flapping, 1),
                      "flapping_s": round(window, 2), "ratio": round(flapping / baseline, 2),
                      "worker_restarts": restarts, "poison_attempts": attempts}))  # fmt: skip
    assert (state, attempts, last_error) == ("failed", 3, "worker lost")
    assert others.states == {"succeeded": 2 * FLOW, "failed": 1}
    assert others.duplicates == 0
    assert restarts == (1 if where == "main" else 0)
