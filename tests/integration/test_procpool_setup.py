"""``@app.process_setup``: a function each process-pool child runs once, before its first job
(new API: these tests are new code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgqueue._worker._procpool import ProcessPool
from tests.helpers import query, run_worker_until, states
from tests.integration import procpool_setup_tasks as t

FIELDS = (1, "t", "cpu", 1, 3, {})
ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.integration.procpool_setup_tasks"


async def test_the_set_up_runs_once_per_child_and_its_wrap_around_each_call(dsn: str, conn) -> None:
    """Three jobs in one child: the set-up ran once, in that child, before the first; each
    call ran inside the context manager it returned, entered and exited once per call."""
    ids = [t.report.enqueue(conn) for _ in range(3)]
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["cpu"], poll_interval=0.05, processes=1, concurrency=1)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 3, timeout=60)
    rows = query(dsn, "SELECT result FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id", [ids])
    results = [result for (result,) in rows]
    assert {r["pid"] for r in results} == {results[0]["pid"]} != {os.getpid()}
    assert all(r["set_up_in"] == r["pid"] and r["setups"] == 1 for r in results)
    assert all(r["inside"] for r in results)
    assert [r["calls"] for r in results] == [0, 1, 2]


async def test_jobs_of_a_child_whose_set_up_failed_fail_with_its_error(dsn: str, conn) -> None:
    """Each job fails with the set-up's own error, its traceback naming the set-up."""
    ids = [t.never_runs.enqueue(conn) for _ in range(2)]
    conn.commit()
    worker = t.failing.worker(dsn=dsn, queues=["cpu"], poll_interval=0.05, processes=1)
    await run_worker_until(worker, lambda: states(dsn).get("failed") == 2, timeout=60)
    ended = "SELECT last_error, errors -> -1 ->> 'traceback' FROM pgqueue.jobs WHERE id = ANY(%s)"
    for error, trace in query(dsn, ended, [ids]):
        assert error == "RuntimeError: the model file is missing"
        assert "in set_up_fails" in trace


async def test_a_set_up_returning_no_function_fails_its_childs_calls() -> None:
    """A set-up must return None or a function making a context manager: anything else
    would fail each call obscurely; each call fails with a TypeError naming the set-up."""
    pool = ProcessPool(1, setups=((MODULE, "returns_no_function"),))
    try:
        with pytest.raises(TypeError, match=f"{MODULE}.returns_no_function returned 42"):
            await pool.run((MODULE, "report"), [], {}, FIELDS)
    finally:
        pool.shutdown()


async def test_a_child_whose_set_up_failed_is_replaced_after_its_job() -> None:
    """A child whose set-up failed stayed, failing each job sent to it while it lived, even
    once the failure had passed (a download that timed out): retries burned their attempts
    there. It is retired after one job, and the next job's new child sets itself up again."""
    marker = t.once_failed_marker()
    marker.unlink(missing_ok=True)
    pool = ProcessPool(1, setups=((MODULE, "set_up_fails_once"),))
    try:
        with pytest.raises(RuntimeError, match="the download timed out"):
            await pool.run((MODULE, "report"), [], {}, FIELDS)
        assert (await pool.run((MODULE, "report"), [], {}, FIELDS))["pid"] != os.getpid()
    finally:
        pool.shutdown()
        marker.unlink(missing_ok=True)


async def test_set_ups_run_in_order_and_their_wraps_nest() -> None:
    """Two set-ups (a framework's, then the app's) both run; the call is inside both wraps."""
    pool = ProcessPool(1, setups=((MODULE, "set_up_child"), (MODULE, "set_up_child")))
    try:
        seen = await pool.run((MODULE, "report"), [], {}, FIELDS)
    finally:
        pool.shutdown()
    assert (seen["setups"], seen["inside"]) == (2, True)


async def test_a_wrap_that_swallows_a_tasks_error_fails_the_call() -> None:
    """A context manager whose exit returned true left the call without an answer: the child
    sent the answer of its call before (here, a success), or failed. The call fails, saying
    why, and the next call's answer is its own."""
    pool = ProcessPool(1, setups=((MODULE, "set_up_suppressing"),))
    try:
        first = await pool.run((MODULE, "report"), [], {}, FIELDS)
        with pytest.raises(RuntimeError, match="suppressed its error"):
            await pool.run((MODULE, "fails"), [], {}, FIELDS)
        assert (await pool.run((MODULE, "report"), [], {}, FIELDS))["pid"] == first["pid"]
    finally:
        pool.shutdown()


SETUP_FAILS = f"""
import multiprocessing, os, pickle
from pgqueue._logging import configure_logging, configured_logging
from pgqueue._worker._liveness import this_process
from pgqueue._worker._procchild import _child_main

if __name__ == "__main__":
    configure_logging("info", "json")
    context = multiprocessing.get_context("forkserver")
    parent, child = context.Pipe()
    process = context.Process(
        target=_child_main,
        args=(child, os.getpid(), this_process()[1], (("{MODULE}", "set_up_fails"),),
              configured_logging()),
    )
    process.start()
    child.close()
    print(parent.recv_bytes().decode(), flush=True)
    for _ in range(3):
        parent.send_bytes(pickle.dumps(
            (("{MODULE}", "report"), [], {{}}, (1, "t", "cpu", 1, 3, {{}}), None)
        ))
        print(parent.recv_bytes()[:1].decode(), flush=True)
    parent.close()
    process.join(60)
"""


def test_a_failed_set_up_is_logged_once_per_child(tmp_path: Path) -> None:
    """A set-up that raised was logged nowhere (only each job's error said it): it is an
    ERROR record (child_setup_failed) with its traceback, once for the child, not per job."""
    script = tmp_path / "setup_fails.py"
    script.write_text(SETUP_FAILS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ran = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.stdout.splitlines() == ["set-up failed", "e", "e", "e"], ran.stderr
    records = [json.loads(line) for line in ran.stderr.splitlines() if line.strip()]
    [failed] = [r for r in records if r.get("action") == "child_setup_failed"]
    assert failed["level"] == "error"
    assert failed["setup"] == f"{MODULE}.set_up_fails"
    assert "RuntimeError: the model file is missing" in failed["exception"]
