"""app.run_worker() after a shutdown that abandoned a coroutine ignoring its cancellation."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.acceptance.conftest import ROOT, cli_env, wait_for
from tests.acceptance.test_cli import enqueue, running
from tests.helpers import query

RUN_WORKER = """
from tests.acceptance.app_under_test import app
try:
    app.run_worker(queues="io", shutdown_timeout=0.5, poll_interval=0.1)
except KeyboardInterrupt:
    print("run_worker returned", flush=True)
"""


def test_run_worker_gives_control_back_when_a_coroutine_ignores_its_cancellation(
    ledger: str,
) -> None:
    """docs/how-to/production.md: a program that runs a worker with app.run_worker() gets
    control back after the shutdown, a coroutine that swallows its CancelledError abandoned
    (its job back in the queue) rather than waited for: Ctrl-C ends it within seconds."""
    enqueue(ledger, "ignores_cancellation", [(120,)])
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_WORKER], env=cli_env(ledger), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: running(ledger) == 1, what="a running job")
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("app.run_worker() waits for the abandoned coroutine") from None
        assert time.monotonic() - started < 15
        assert query(ledger, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]
    finally:
        process.kill()
        output = process.communicate()[0]
    assert "run_worker returned" in output, output[-2000:]
