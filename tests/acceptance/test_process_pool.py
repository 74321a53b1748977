"""The process pool under the real CLI: children, signals and the worker's stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.acceptance.conftest import ROOT, cli_env, wait_for
from tests.helpers import query, states

TASK = "tests.acceptance.app_under_test.sleeps_in_a_child"


def enqueue(dsn: str, seconds: list[float]) -> None:
    """Enqueue one job of sleeps_in_a_child per duration."""
    query(dsn, "SELECT pgqueue.enqueue(%s, jsonb_build_array(s), queue => 'io')"
               " FROM unnest(%s::float8[]) AS s", [TASK, seconds])  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_process_group_lets_process_jobs_finish(
    ledger: str, signum: signal.Signals
) -> None:
    """Ctrl-C in a terminal (SIGINT) or a supervisor's SIGTERM reaches every process of the
    group, the worker's children too. A busy child raised KeyboardInterrupt in the task (or
    died, on SIGTERM): its job lost an attempt (failed on its last) instead of finishing in
    the graceful stop; an idle child printed a traceback. The children leave it to the
    worker."""
    enqueue(ledger, [0.5, 0.5])  # at once: two children, one of them idle from then on
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "worker", "--queues", "io:2", "--processes", "2",
         "--poll-interval", "0.1"],
        env=cli_env(ledger), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: states(ledger) == {"succeeded": 2}, what="the first jobs")
        enqueue(ledger, [3])
        wait_for(lambda: query(ledger, "SELECT count(*) FROM ledger") == [(3,)],
                 what="the last job running")  # fmt: skip
        os.killpg(worker.pid, signum)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, output
    assert "Traceback" not in output, output
    jobs = query(ledger, "SELECT state, attempts FROM pgqueue.jobs ORDER BY id")
    assert jobs == [("succeeded", 1)] * 3
