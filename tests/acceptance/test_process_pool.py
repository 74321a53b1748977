"""The process pool under the real CLI: children, signals and the worker's stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgqueue._worker._procpool import ChildRefused
from tests.acceptance.conftest import ROOT, cli, cli_env, usage_error, wait_for
from tests.helpers import query, states

TASK = "tests.acceptance.app_under_test.sleeps_in_a_child"


def enqueue(dsn: str, seconds: list[float]) -> None:
    """Enqueue one job of sleeps_in_a_child per duration."""
    query(dsn, "SELECT pgqueue.enqueue(%s, jsonb_build_array(s), queue => 'io')"
               " FROM unnest(%s::float8[]) AS s", [TASK, seconds])  # fmt: skip


@contextlib.contextmanager
def started(ledger: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``pgqueue worker ARGS`` in a session of its own, killed if it still runs at the end."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "worker", "--poll-interval", "0.1", *args],
        env=cli_env(ledger), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


def assert_each_ran_once(
    ledger: str, worker: subprocess.Popen[str], output: str, jobs: int
) -> None:
    """The worker exited cleanly, and its ``jobs`` jobs each succeeded at their first attempt."""
    assert worker.returncode == 0, output
    assert "Traceback" not in output, output
    ended = query(ledger, "SELECT state, attempts FROM pgqueue.jobs ORDER BY id")
    assert ended == [("succeeded", 1)] * jobs


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
    with started(ledger, "--queues", "io:2", "--processes", "2") as worker:
        wait_for(lambda: states(ledger) == {"succeeded": 2}, what="the first jobs")
        enqueue(ledger, [3])
        wait_for(lambda: query(ledger, "SELECT count(*) FROM ledger") == [(3,)],
                 what="the last job running")  # fmt: skip
        os.killpg(worker.pid, signum)
        output, _ = worker.communicate(timeout=60)
    assert_each_ran_once(ledger, worker, output, 3)


def test_max_tasks_per_child_replaces_children_between_jobs(ledger: str) -> None:
    """--max-tasks-per-child 2 with one child: every two jobs run in a new child, and no job
    loses an attempt or is lost to the replacement."""
    enqueue(ledger, [0] * 6)
    with started(ledger, "--queues", "io:1", "--processes", "1", "--max-tasks-per-child", "2",
                 "--burst") as worker:  # fmt: skip
        output, _ = worker.communicate(timeout=120)
    assert_each_ran_once(ledger, worker, output, 6)
    pids = [pid for (pid,) in query(ledger, "SELECT pid FROM ledger ORDER BY job_id")]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5], pids
    assert len(set(pids)) == 3 and worker.pid not in pids, pids


UNGUARDED = """
import asyncio, os
import pgqueue

app = pgqueue.PgQueue(dsn=os.environ["PGQUEUE_DSN"])


@app.task(name="h90.pid", executor="process", max_attempts=1)
def pid() -> int:
    return os.getpid()


asyncio.run(app.worker(burst=True, processes=1, poll_interval=0.1).run())
print("worker ran in", os.getpid(), flush=True)
"""


def test_a_script_without_a_main_guard_runs_no_worker_in_its_children(
    dsn: str, tmp_path: Path
) -> None:
    """A worker script without `if __name__ == "__main__":` is run again in each child of the
    process pool (forkserver and spawn re-run the main script): its worker ran there too,
    claiming jobs of its own, before the child served the pool. That worker now refuses to
    start, naming the guard: the child ends, with a status of its own (REFUSED_EXIT), by
    which the worker names the cause in the job's error and in its child_lost record, where
    both said only worker lost."""
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    query(dsn, "SELECT pgqueue.enqueue('h90.pid', max_attempts => 1)")
    ran = subprocess.run(
        [sys.executable, str(script)], env=cli_env(dsn), cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [f"worker ran in {ran.stdout.split()[-1]}"], ran.stdout
    assert 'start the worker under `if __name__ == "__main__":`' in ran.stderr
    [(state, last_error)] = query(dsn, "SELECT state, last_error FROM pgqueue.jobs")
    assert (state, last_error) == ("failed", f"ChildRefused: {ChildRefused()}")
    assert 'start the worker under `if __name__ == "__main__":`' in last_error
    [lost] = [line for line in ran.stderr.splitlines() if "before it answered" in line]
    assert "exited with status 78, refusing to run the worker" in lost


SUPERVISED = """
import asyncio, multiprocessing, os, sys
import pgqueue

app = pgqueue.PgQueue(dsn=os.environ["PGQUEUE_DSN"])


@app.task(name="h95.pid", executor="process", max_attempts=1)
def pid() -> int:
    return os.getpid()


def run_worker() -> None:
    asyncio.run(app.worker(burst=True, processes=1, poll_interval=0.1).run())
    print("worker ran in", os.getpid(), flush=True)


if __name__ == "__main__":
    worker = multiprocessing.get_context(sys.argv[1]).Process(target=run_worker)
    worker.start()
    worker.join(100)
    sys.exit(worker.exitcode)
"""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_worker_a_supervisor_starts_in_a_multiprocessing_child_is_not_refused(
    dsn: str, tmp_path: Path, method: str
) -> None:
    """A worker refuses to start in a process-pool child that is re-running the main script;
    a worker that the user's own supervisor starts as the target of a multiprocessing child
    (any start method) is no such child: it starts, and runs a process job in a child of its
    own pool."""
    script = tmp_path / "supervisor.py"
    script.write_text(SUPERVISED)
    query(dsn, "SELECT pgqueue.enqueue('h95.pid', max_attempts => 1)")
    ran = subprocess.run(
        [sys.executable, str(script), method], env=cli_env(dsn), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "__main__" not in ran.stderr, ran.stderr
    [(state, result)] = query(dsn, "SELECT state, result FROM pgqueue.jobs")
    worker_pid = int(ran.stdout.split()[-1])
    assert (state, ran.stdout.splitlines()) == ("succeeded", [f"worker ran in {worker_pid}"])
    assert result not in (worker_pid, os.getpid()), result


SLOW_START = """
import asyncio, os, pathlib, time
import pgqueue

app = pgqueue.PgQueue(dsn=os.environ["PGQUEUE_DSN"])


@app.task(name="h126.pid", executor="process", max_attempts=1)
def pid() -> int:
    return os.getpid()


if __name__ == "__mp_main__":  # the pool's start re-runs this script: a slow import, say
    pathlib.Path("starting").touch()
    time.sleep(2)

if __name__ == "__main__":
    worker = app.worker(burst=True, processes=1, poll_interval=0.1)
    asyncio.run(worker.run(install_signal_handlers=True))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_group_while_a_child_starts_lets_its_job_run(
    dsn: str, tmp_path: Path, signum: signal.Signals
) -> None:
    """A Ctrl-C or a supervisor's SIGTERM reaching the process group while the pool starts
    a child (the main script, run again there, importing slowly) is the worker's graceful
    stop: the process started, the forkserver and its child, had no handler of its own
    yet, and died of it (KeyboardInterrupt, SIGTERM), the job failing on the way. The
    signals are held until the child has set its handlers; the job runs."""
    script = tmp_path / "slow_start.py"
    script.write_text(SLOW_START)
    query(dsn, "SELECT pgqueue.enqueue('h126.pid', max_attempts => 1)")
    worker = subprocess.Popen(
        [sys.executable, str(script)], env=cli_env(dsn), cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for((tmp_path / "starting").exists, what="the child's start")
        os.killpg(worker.pid, signum)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, output
    assert "Traceback" not in output, output
    [(state, attempts, child)] = query(dsn, "SELECT state, attempts, result FROM pgqueue.jobs")
    assert (state, attempts) == ("succeeded", 1), output
    assert child != worker.pid


MAIN_SET_UP = """
import asyncio, os
import pgqueue

app = pgqueue.PgQueue(dsn=os.environ["PGQUEUE_DSN"])
ready = []


@app.process_setup
def set_up():
    ready.append(os.getpid())


@app.task(name="h126.ready", executor="process", max_attempts=1)
def ready_in() -> list:
    return [ready, os.getpid()]


if __name__ == "__main__":
    asyncio.run(app.worker(burst=True, processes=1, poll_interval=0.1).run())
"""


@pytest.mark.parametrize("how", [["script.py"], ["-m", "script"]])
def test_a_set_up_in_the_main_script_runs_in_its_workers_children(
    dsn: str, tmp_path: Path, how: list[str]
) -> None:
    """A set-up in a script run as itself, or with ``-m`` (``__main__``): a child runs it again as
    ``__mp_main__``, and finds there the set-up and the tasks, one copy. It was refused at
    registration, even in a script that only enqueues, whose set-up never runs."""
    (tmp_path / "script.py").write_text(MAIN_SET_UP)
    query(dsn, "SELECT pgqueue.enqueue('h126.ready')")
    ran = subprocess.run(
        [sys.executable, *how], cwd=tmp_path,
        env=cli_env(dsn), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    [(state, (ready, child))] = query(dsn, "SELECT state, result FROM pgqueue.jobs")
    assert (state, ready) == ("succeeded", [child]), ran.stderr


@pytest.mark.parametrize(
    ("value", "error"),
    [("0.5", "0.5 is not in the range 1<=x<=31557600000."),
     ("soon", "'soon' is not a number of seconds (digits 0-9, e.g. 2.5).")],
)  # fmt: skip
def test_child_start_timeout_must_be_a_number_of_seconds_of_one_or_more(
    dsn: str, value: str, error: str
) -> None:
    """--child-start-timeout (the start limit was the pool's parameter only) takes seconds
    >= 1: less, or not a number, is a usage error naming the option."""
    refused = cli(dsn, "worker", "--child-start-timeout", value, "--burst")
    assert refused.returncode == 2
    assert usage_error(refused.stderr) == (
        f"Error: Invalid value for '--child-start-timeout': {error}"
    )


@pytest.mark.parametrize(
    ("value", "error"),
    [("0", "0 is not in the range x>=1."), ("two", "'two' is not a whole number (digits 0-9).")],
)
def test_max_tasks_per_child_must_be_a_whole_number_of_one_or_more(
    dsn: str, value: str, error: str
) -> None:
    """A limit below 1, or not a number, is a usage error naming the option."""
    refused = cli(dsn, "worker", "--max-tasks-per-child", value, "--burst")
    assert refused.returncode == 2
    assert usage_error(refused.stderr) == (
        f"Error: Invalid value for '--max-tasks-per-child': {error}"
    )
