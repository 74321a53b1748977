"""The runnable examples in examples/ do what the docs say, so the docs cannot rot."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import query

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def env_for(dsn: str) -> dict[str, str]:
    """The environment an example runs in: the test database as PGQUEUE_DSN."""
    return {**os.environ, "PGQUEUE_DSN": dsn, "PGQUEUE_LOG_LEVEL": "warning"}


def run_example(name: str, dsn: str) -> str:
    """Run ``python examples/NAME.py`` from its folder and return its output."""
    done = subprocess.run(
        [sys.executable, f"{name}.py"], cwd=EXAMPLES, env=env_for(dsn),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_worker(
    dsn: str, args: list[str], until: Callable[[], bool], timeout: float = 60, cwd: Path = EXAMPLES
) -> str:
    """Run `pgqueue --app ... worker` on the example (from ``cwd``) until ``until()``, then
    SIGTERM it; returns what it logged."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", *args], cwd=cwd, env=env_for(dsn),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not until():
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, "the example's jobs did not finish in time"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    return err


def states(dsn: str, task_prefix: str) -> dict[str, str]:
    """The state of each job whose task name starts with ``task_prefix``, keyed by task."""
    return dict(query(dsn, "SELECT task, state FROM pgqueue.jobs WHERE task LIKE %s",
                      [task_prefix + "%"]))  # fmt: skip


def finished(dsn: str) -> bool:
    """Whether no job is queued or running any more."""
    return query(dsn, "SELECT count(*) FROM pgqueue.active_jobs") == [(0,)]


def test_orders_example_commits_two_orders_with_their_jobs_and_rolls_one_back(dsn: str) -> None:
    """orders.py: two orders commit with 4 jobs, the declined one leaves no order and no job."""
    out = run_example("orders", dsn)
    assert "rolled back: order 3" in out
    assert query(dsn, "SELECT count(*) FROM shop_orders") == [(2,)]
    run_worker(dsn, ["--app", "orders:app", "worker", "--queues", "io,cpu:2"],
               lambda: finished(dsn))  # fmt: skip
    rows = query(dsn, "SELECT id, task, state, result FROM pgqueue.jobs ORDER BY id")
    assert rows == [  # the table the tutorial shows
        (1, "shop.send_receipt", "succeeded", "receipt for order 1 sent to ada@example.com"),
        (2, "shop.render_invoice", "succeeded", "invoice-1-a9b27fb5.pdf"),
        (3, "shop.send_receipt", "succeeded", "receipt for order 2 sent to grace@example.com"),
        (4, "shop.render_invoice", "succeeded", "invoice-2-c6a65947.pdf"),
    ]


def test_retries_example_ends_in_each_documented_state(dsn: str) -> None:
    """retries.py: backoff then success, Retry without an attempt, Cancel, and failed."""
    run_example("retries", dsn)
    run_worker(dsn, ["--app", "retries:app", "worker", "--queues", "payments"],
               lambda: finished(dsn))  # fmt: skip
    rows = query(dsn, "SELECT task, state, attempts, jsonb_array_length(errors) FROM pgqueue.jobs")
    assert sorted(rows) == [
        ("payments.capture", "cancelled", 1, 1),
        ("payments.charge", "succeeded", 3, 2),
        ("payments.reconcile", "failed", 2, 2),
        ("payments.sync_ledger", "succeeded", 1, 0),
    ]


def test_scheduling_example_runs_only_what_is_due_on_the_database_clock(dsn: str) -> None:
    """scheduling.py: delays count from the database's now(); only the due job runs. It prints
    what it enqueued (it printed nothing)."""
    out = run_example("scheduling", dsn).splitlines()
    ids = [job_id for (job_id,) in query(dsn, "SELECT id FROM pgqueue.jobs ORDER BY id")]
    dues = ["now", "in an hour", "tomorrow", "at 2030-01-01 09:00:00+00:00"]
    assert out == [f"enqueued job {i}: due {due}" for i, due in zip(ids, dues, strict=True)]
    delays = query(dsn, "SELECT args->>1, extract(epoch FROM run_at - created_at)::int,"
                        " run_at FROM pgqueue.jobs ORDER BY id")  # fmt: skip
    assert [(text, secs) for text, secs, _ in delays[:3]] == [
        ("now", 0), ("in an hour", 3600), ("tomorrow", 86400),
    ]  # fmt: skip
    assert delays[3][2].isoformat() == "2030-01-01T09:00:00+00:00"
    run_worker(
        dsn,
        ["--app", "scheduling:app", "worker", "--queues", "mail"],
        lambda: "succeeded" in dict(query(dsn, "SELECT state, 1 FROM pgqueue.jobs")),
    )
    counts = dict(query(dsn, "SELECT state, count(*) FROM pgqueue.jobs GROUP BY state"))
    assert counts == {"succeeded": 1, "queued": 3}


def test_idempotency_example_credits_once_although_the_job_runs_twice(dsn: str) -> None:
    """idempotency.py: two runs of the same credit leave one ledger row. It prints what it
    enqueued (it printed nothing)."""
    out = run_example("idempotency", dsn)
    first, second = (i for (i,) in query(dsn, "SELECT id FROM pgqueue.jobs ORDER BY id"))
    assert out == f"enqueued jobs {first} and {second}: the same credit for order 42\n"
    run_worker(dsn, ["--app", "idempotency:app", "worker", "--queues", "loyalty"],
               lambda: finished(dsn))  # fmt: skip
    assert query(dsn, "SELECT order_id, points FROM loyalty_points") == [(42, 42)]
    results = query(dsn, "SELECT result FROM pgqueue.jobs ORDER BY finished_at, id")
    assert sorted(r for (r,) in results) == ["already credited", "credited"]


def test_long_transaction_example_names_the_idle_report(dsn: str) -> None:
    """long_transaction.py: both drains and both sets of jobs sent one at a time finish, and
    the worker names the report's session."""
    out = run_example("long_transaction", dsn).splitlines()
    prefixes = ["nothing held open", "a report idle in its transaction"]
    for line, prefix in zip(out[:2], prefixes, strict=True):
        assert re.fullmatch(
            prefix + r": 50000 jobs in [0-9.]+ s, then one at a time: "
            r"[0-9.]+ ms from commit to start \(median\)",
            line,
        ), line
    # Any other session of the server holding a transaction id that long is named too.
    [warned] = [line for line in out[2:] if "application 'nightly-report'" in line]
    assert warned.startswith("worker warned: a transaction open for ")
    assert warned.endswith("application 'nightly-report', idle in transaction")
    assert query(dsn, "SELECT state, count(*) FROM pgqueue.jobs GROUP BY state") == [
        ("succeeded", 100_100)
    ]
    # Named tasks: run as a script, unnamed ones were registered as "__main__.noop".
    assert query(dsn, "SELECT DISTINCT task FROM pgqueue.jobs ORDER BY task") == [
        ("long_transaction.noop",), ("long_transaction.stamp",)
    ]  # fmt: skip


def test_alert_example_runs_as_its_docstring_says_from_the_repository_root(dsn: str) -> None:
    """alert_on_failure.py's two commands, as written: the enqueue prints the job's id, and
    without ALERT_WEBHOOK the worker logs the alert as an ERROR after the third attempt."""
    app = "examples.alert_on_failure:app"
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", app, "enqueue",
         "examples.alert_on_failure.build_report", "--args", "[-1]"],
        cwd=EXAMPLES.parent, env=env_for(dsn), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout)
    err = run_worker(dsn, ["--app", app, "worker", "-q", "reports"], lambda: finished(dsn),
                     cwd=EXAMPLES.parent)  # fmt: skip
    assert f"job {job_id} failed for good: ValueError: no report -1" in err
    assert query(dsn, "SELECT state, attempts FROM pgqueue.jobs") == [("failed", 3)]


def test_process_setup_example_runs_as_its_docstring_says_from_the_repository_root(
    dsn: str,
) -> None:
    """process_setup.py's two commands, as written: the job is scored in a child whose set-up
    loaded the model, in that same child, before it."""
    app = "examples.process_setup:app"
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", app, "enqueue",
         "examples.process_setup.score", "--args", '["a job in a queue"]'],
        cwd=EXAMPLES.parent, env=env_for(dsn), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout)
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", app, "worker", "-q", "cpu", "--burst"],
        cwd=EXAMPLES.parent, env=env_for(dsn), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [(state, result)] = query(dsn, "SELECT state, result FROM pgqueue.jobs WHERE id = %s", [job_id])
    assert (state, result["score"]) == ("succeeded", 5)
    assert result["model_loaded_in"] == result["child"]
