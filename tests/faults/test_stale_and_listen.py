"""Scenarios 3 and 5: a stale worker changes nothing; a killed LISTEN backend comes back."""

from __future__ import annotations

import json
import signal

import psycopg
import pytest

from tests.faults.harness import Fleet, all_done, db_now, wait_for
from tests.faults.ledger_app import record, slow_record
from tests.helpers import query

LEASE, RESCUE = 1.5, 0.3


@pytest.mark.slow
def test_stale_worker_loses_its_lease_and_its_outcome_is_discarded(
    ledger_dsn: str, fleet: Fleet
) -> None:
    """SIGSTOP past the lease, another worker re-claims, SIGCONT: the new attempt stands."""
    with psycopg.connect(ledger_dsn) as conn:
        job_id = slow_record.enqueue(conn, 40)  # 4 s of work, in 0.1 s steps
        conn.commit()
    stale = fleet.start("stale", lease=LEASE, rescue=RESCUE)
    running = "SELECT worker_id, attempts FROM pgqueue.jobs WHERE state = 'running'"
    wait_for(lambda: query(ledger_dsn, running) == [("stale", 1)], 30, "the first attempt")
    stale.signal(signal.SIGSTOP)
    stopped_at = db_now(ledger_dsn)
    fleet.start("fresh", lease=LEASE, rescue=RESCUE)
    wait_for(lambda: query(ledger_dsn, running) == [("fresh", 2)], 30, "the re-claim")
    [(reclaimed,)] = query(ledger_dsn, "SELECT extract(epoch FROM started_at - %s) "
                                       "FROM pgqueue.jobs", [stopped_at])  # fmt: skip
    print(json.dumps({"scenario": 3, "reclaimed_after_sigstop_s": round(float(reclaimed), 2),
                      "lease_plus_sweep_s": LEASE + RESCUE}))  # fmt: skip
    stale.signal(signal.SIGCONT)
    wait_for(lambda: "lease lost" in stale.text(), 30, "the stale worker to notice")
    wait_for(lambda: query(ledger_dsn, "SELECT state FROM pgqueue.jobs") == [("succeeded",)],
             30, "the second attempt to finish")  # fmt: skip
    assert query(ledger_dsn, "SELECT worker_id, attempts FROM pgqueue.jobs WHERE id = %s",
                 [job_id]) == [("fresh", 2)]  # fmt: skip
    # The stale copy was stopped before its side effect: only attempt 2 ran to the end.
    assert query(ledger_dsn, "SELECT attempt FROM fault_ledger") == [(2,)]
    assert stale.alive


def _listener(dsn: str) -> list[tuple[int]]:
    return query(dsn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                      "AND application_name = 'pgqueue listener'")  # fmt: skip


@pytest.mark.slow
def test_terminated_listen_backend_is_replaced_and_a_catch_up_claim_runs(
    ledger_dsn: str, fleet: Fleet
) -> None:
    """pg_terminate_backend on LISTEN: reconnected, and a job waits less than one poll."""
    poll = 30.0
    worker = fleet.start("listener", poll=poll, lease=10, rescue=5)
    [(old_pid,)] = wait_for(lambda: _listener(ledger_dsn), 30, "the LISTEN connection")
    query(ledger_dsn, "SELECT pg_terminate_backend(%s)", [old_pid])
    killed_at = db_now(ledger_dsn)
    with psycopg.connect(ledger_dsn) as conn:
        record.enqueue(conn, 1)
        conn.commit()
    wait_for(all_done(ledger_dsn, 1), poll, "the job enqueued while LISTEN was down")
    [(waited,)] = query(ledger_dsn, "SELECT extract(epoch FROM finished_at - %s) "
                                    "FROM pgqueue.jobs", [killed_at])  # fmt: skip
    [(new_pid,)] = wait_for(lambda: _listener(ledger_dsn), 30, "a new LISTEN connection")
    print(json.dumps({"scenario": 5, "job_waited_s": round(float(waited), 2), "poll_s": poll}))
    assert new_pid != old_pid
    assert float(waited) < poll
    wait_for(lambda: "LISTEN re-established" in worker.text(), 10, "the reconnect log line")
