"""Scenario 7: tasks that ignore their timeout are given up on, and their slots come back."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.faults.harness import Fleet, all_done, pid_alive, wait_for
from tests.faults.ledger_app import child_pid, stubborn_process, stubborn_thread, thread_record
from tests.helpers import query


@pytest.mark.slow
def test_process_task_over_its_timeout_is_killed_and_its_process_replaced(
    ledger_dsn: str, fleet: Fleet
) -> None:
    """A process task sleeping past its timeout: its child is killed, the next job runs."""
    with psycopg.connect(ledger_dsn) as conn:
        first = child_pid.enqueue(conn)
        conn.commit()
    fleet.start("cpu", queues="cpu", concurrency=1, extra=("--processes", "1"))
    wait_for(all_done(ledger_dsn, 1), 60, "the first process job")
    [(old_child,)] = query(ledger_dsn, "SELECT result FROM pgqueue.jobs WHERE id = %s", [first])
    with psycopg.connect(ledger_dsn) as conn:
        stuck = stubborn_process.enqueue(conn, 600)
        after = child_pid.enqueue(conn)
        conn.commit()
    wait_for(all_done(ledger_dsn, 3), 60, "the stubborn job and the one after it")
    rows = dict(query(ledger_dsn, "SELECT id, (state, attempts, last_error, result) "
                                  "FROM pgqueue.jobs"))  # fmt: skip
    # The first timeout's error time to the next job's start: how long the slot stayed lost.
    [(gap,)] = query(ledger_dsn, "SELECT extract(epoch FROM (SELECT started_at FROM pgqueue.jobs "
                     "WHERE id = %s) - (SELECT (errors->0->>'at')::timestamptz FROM pgqueue.jobs "
                     "WHERE id = %s))", [after, stuck])  # fmt: skip
    print(json.dumps({"scenario": 7, "executor": "process", "timeout_s": 1,
                      "next_job_started_after_timeout_s": round(float(gap), 2)}))  # fmt: skip
    assert rows[stuck][:3] == ("failed", "2", "timed out after 1.0 s")
    assert rows[after][0] == "succeeded"
    assert int(rows[after][3]) != old_child
    assert not pid_alive(old_child)


@pytest.mark.slow
def test_thread_task_over_its_timeout_keeps_its_slot_until_the_thread_ends(
    ledger_dsn: str, fleet: Fleet
) -> None:
    """A thread task past its timeout is failed at once, but its slot is freed only at its end."""
    with psycopg.connect(ledger_dsn) as conn:
        stuck = stubborn_thread.enqueue(conn, 2.0)
        conn.commit()
    fleet.start("threads", queues="threads", concurrency=1)
    wait_for(lambda: query(ledger_dsn, "SELECT state FROM pgqueue.jobs") == [("failed",)],
             30, "the timeout to be recorded")  # fmt: skip
    with psycopg.connect(ledger_dsn) as conn:
        thread_record.enqueue(conn)
        conn.commit()
    wait_for(all_done(ledger_dsn, 2), 30, "the next thread job")
    [(last_error,)] = query(ledger_dsn, "SELECT last_error FROM pgqueue.jobs WHERE id = %s",
                            [stuck])  # fmt: skip
    kinds = [k for (k,) in query(ledger_dsn, "SELECT kind FROM fault_ledger ORDER BY at")]
    assert last_error == "timed out after 0.5 s"
    # The one slot stayed taken while the abandoned thread ran: the next job started after it.
    assert kinds == ["thread_end", "thread_start"]
