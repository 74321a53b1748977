"""The chaos workload: jobs of every outcome kind, and the invariants their ledger must keep.

Each job of ``ledger_app.chaos`` (async) or ``chaos_sync`` (thread) carries a plan of what its
runs do: succeed, fail (with retries left, or on the last attempt), raise ``Retry()`` (which
gives the attempt back) or ``Retry(delay=...)``, overrun its timeout, or have itself
cancelled while it runs. Some jobs are unique, some scheduled for later. Each run writes one
ledger row before it acts, so the ledger is a history of what ran that no fault in the queue can
touch; :func:`judge` compares it with the jobs' rows.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from tests.faults.ledger_app import CHAOS_DDL, GIVE_BACK, chaos, chaos_sync
from tests.helpers import query

# name: (plan, max_attempts, job options). Attempts lost to faults (a crash, a claim whose
# reply was lost) shift a plan onto later attempts; max_attempts leaves room for them but
# where the plan means to end on the last attempt.
PLANS: dict[str, tuple[list[list[str]], int, dict[str, Any]]] = {
    "ok": ([["ok"]], 6, {}),
    "fail_then_ok": ([["fail"], ["fail"], ["ok"]], 6, {}),
    "fail_last": ([["fail"], ["fail"]], 2, {}),
    "retry": ([["retry", "retry", "retry", "ok"]], 6, {}),
    "retry_delay": ([["retry_delay", "retry", "ok"]], 6, {}),
    "retry_and_fail": ([["retry", "fail"], ["retry", "retry", "ok"]], 6, {}),
    "retry_then_fail_last": ([["retry", "fail"]], 1, {}),
    "timeout": ([["timeout"], ["ok"]], 6, {"timeout": 0.3}),
    "timeout_last": ([["retry", "timeout"]], 1, {"timeout": 0.3}),
    "cancel": ([["retry", "cancel"]], 6, {}),
    "scheduled": ([["retry", "ok"]], 6, {"delay": 0.5}),
    "unique": ([["retry", "retry", "ok"]], 6, {}),
}


@dataclass
class Enqueued:
    """What the test enqueued: job ids by plan name, and each job's first run_at."""

    plans: dict[int, str] = field(default_factory=dict)
    run_at: dict[int, datetime] = field(default_factory=dict)
    unique: dict[str, int] = field(default_factory=dict)


def create_chaos_ledger(dsn: str) -> None:
    """Create the chaos ledger table."""
    query(dsn, CHAOS_DDL)


def enqueue_chaos(dsn: str, copies: int, seed: int) -> Enqueued:
    """``copies`` jobs of each plan, on each executor, in a seeded order; a unique job is
    enqueued twice (the second enqueue must find the first)."""
    calls = [(name, task) for name in PLANS for task in (chaos, chaos_sync)] * copies
    random.Random(seed).shuffle(calls)
    done = Enqueued()
    with psycopg.connect(dsn) as conn:
        for i, (name, task) in enumerate(calls):
            plan, max_attempts, options = PLANS[name]
            key = f"chaos-{i}" if name == "unique" else None
            using = task.using(max_attempts=max_attempts, unique_key=key, **options)
            job_id = using.enqueue(conn, plan)
            if key is not None:
                assert using.enqueue(conn, plan) == job_id, "a unique key held twice"
                done.unique[key] = job_id
            done.plans[job_id] = name
        conn.commit()
    rows = query(dsn, "SELECT id, run_at FROM pgqueue.jobs WHERE id = ANY(%s)",
                 [list(done.plans)])  # fmt: skip
    done.run_at = dict(rows)
    return done


@dataclass
class Run:
    """One run of a job, as its ledger row tells it."""

    run: int
    attempt: int
    action: str
    pid: int
    started: datetime
    ended: datetime | None

    def __str__(self) -> str:
        return f"run {self.run} (attempt {self.attempt}: {self.action}, pid {self.pid})"


def _runs(dsn: str) -> dict[int, list[Run]]:
    runs: dict[int, list[Run]] = {}
    for job_id, *row in query(dsn, "SELECT job_id, run, attempt, action, pid, started, ended "
                                   "FROM chaos_ledger ORDER BY started, run"):  # fmt: skip
        runs.setdefault(job_id, []).append(Run(*row))
    return runs


def _final(
    last: Run, state: str, attempts: int, max_attempts: int, error: str, *, timeout: bool
) -> str | None:
    """What is wrong with a job's final row, given its last run; None if nothing. ``timeout``
    says whether the job has a timeout."""
    # A cancel is written by the attempt (cancelled at a heartbeat, or its Retry, which gives
    # the attempt back, ended cancelled), or by a rescue (the worker was lost meanwhile), each
    # as "cancelled on request".
    expected: dict[str, tuple[str, set[int], tuple[str, ...]]] = {
        "ok": ("succeeded", {last.attempt}, ("",)),
        "fail": ("failed", {max_attempts}, ("RuntimeError: planned failure",)),
        "timeout": ("failed", {max_attempts}, ("timed out after",)),
        "cancel": ("cancelled", {last.attempt, last.attempt - 1}, ("cancelled on request",)),
    }  # fmt: skip
    if timeout and last.action in GIVE_BACK and error.startswith("timed out after"):
        # A Retry() raised once the job's timer had expired counts as a timeout, not a retry.
        expected[last.action] = expected["timeout"]
    if last.action not in expected:
        return f"ended {state} after a run that asked to run again ({last.action})"
    want_state, want_attempts, want_error = expected[last.action]
    if state != want_state or attempts not in want_attempts or not error.startswith(want_error):
        return f"ended {state} at attempt {attempts} ({error}) after a run of {last}"
    if want_state == "failed" and last.attempt != max_attempts:
        return f"ended {state} by a run of attempt {last.attempt} of {max_attempts}"
    return None


def _sequence(runs: list[Run], max_attempts: int) -> list[str]:
    """What is wrong with the order of a job's runs: each run's attempt repeats the one before
    only if that one gave it back, and grows otherwise; no run starts before the one before
    it ended; attempts stay within max_attempts."""
    wrong = []
    for before, after in itertools.pairwise(runs):
        if before.action in GIVE_BACK and after.attempt < before.attempt:
            wrong.append(f"{after} went back from {before}")
        if before.action not in GIVE_BACK and after.attempt <= before.attempt:
            wrong.append(f"{after} ran again the attempt of {before}")
        if before.ended is not None and after.started < before.ended:
            wrong.append(f"{after} ran while {before} did")
    if max(r.attempt for r in runs) > max_attempts:
        wrong.append(f"an attempt past max_attempts {max_attempts}")
    if sum(r.action not in GIVE_BACK for r in runs) > max_attempts:
        wrong.append(f"more attempts counted than max_attempts {max_attempts}")
    return wrong


def _timed_out_unrun(error: str, attempts: int, runs: list[Run]) -> bool:
    """Whether a job's last attempt timed out without a run recorded."""
    return error.startswith("timed out after") and (not runs or runs[-1].attempt < attempts)


def judge(dsn: str, enqueued: Enqueued) -> dict[int, list[str]]:
    """Every invariant the ledger can check, by job: empty when all hold."""
    rows = query(dsn, "SELECT id, state, attempts, max_attempts, coalesce(last_error, '') "
                      "FROM pgqueue.jobs WHERE id = ANY(%s)", [list(enqueued.plans)])  # fmt: skip
    runs = _runs(dsn)
    wrong: dict[int, list[str]] = {}
    for job_id, state, attempts, max_attempts, error in rows:
        job_runs = runs.get(job_id, [])
        found = _sequence(job_runs, max_attempts) if job_runs else []
        if state in ("queued", "running"):
            found.append(f"still {state}")
        elif state == "failed" and (
            error == "worker lost" or _timed_out_unrun(error, attempts, job_runs)
        ):
            # The last attempt never ran, or never got to record its run (a timeout that
            # struck while a child process started): it can only be the last allowed.
            if attempts != max_attempts:
                found.append(f"{error} at attempt {attempts} of {max_attempts}")
        elif not job_runs:
            found.append(f"ended {state} without a run")
        else:
            timeout = "timeout" in PLANS[enqueued.plans[job_id]][2]
            problem = _final(job_runs[-1], state, attempts, max_attempts, error, timeout=timeout)
            if problem:
                found.append(problem)
        if job_runs and job_runs[0].started < enqueued.run_at[job_id]:
            found.append("ran before its run_at")
        if found:
            wrong[job_id] = [enqueued.plans[job_id], *found]
    for job_id in set(enqueued.plans) - {r[0] for r in rows}:
        wrong[job_id] = [enqueued.plans[job_id], "lost: no row"]
    keys = query(dsn, "SELECT unique_key, count(*) FROM pgqueue.jobs "
                      "WHERE unique_key = ANY(%s) GROUP BY 1", [list(enqueued.unique)])  # fmt: skip
    if sorted(keys) != sorted((key, 1) for key in enqueued.unique):
        wrong[0] = ["unique keys", str(keys)]
    return wrong


def outcomes(dsn: str) -> dict[str, int]:
    """How many runs did each action, and how many jobs ended in each state (for the report)."""
    actions = dict(query(dsn, "SELECT action, count(*) FROM chaos_ledger GROUP BY 1"))
    states = dict(query(dsn, "SELECT state, count(*) FROM pgqueue.jobs GROUP BY 1"))
    return {**actions, **{f"jobs_{state}": n for state, n in states.items()}}
