"""Real worker processes for the fault-injection suite, and the ledger that judges them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import query

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """One ``python -m pgqueue worker`` subprocess and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker."""
        self.process.send_signal(signum)

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def text(self) -> str:
        """Everything the worker logged so far."""
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait, and return the exit status (SIGKILL if it does not stop)."""
        if self.alive:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


class Fleet:
    """Starts workers of ``tests.faults.ledger_app`` and stops every one of them at the end."""

    def __init__(self, dsn: str, logs: Path) -> None:
        self.dsn = dsn
        self.logs = logs
        self.workers: list[WorkerProcess] = []

    def start(
        self, name: str, *, queues: str = "faults", concurrency: int = 10, lease: float = 2.0,
        rescue: float = 0.5, poll: float = 0.2, fault: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> WorkerProcess:  # fmt: skip
        """Start one worker; ``fault`` sets PGQUEUE_FAULT for it alone."""
        env = {**os.environ, "PGQUEUE_DSN": self.dsn, "PYTHONPATH": str(ROOT)}
        env.pop("PGQUEUE_FAULT", None)
        if fault:
            env["PGQUEUE_FAULT"] = fault
        log = self.logs / f"{name}.log"
        command = [
            sys.executable, "-m", "pgqueue", "--app", "tests.faults.ledger_app:app", "worker",
            "--name", name, "-q", queues, "-c", str(concurrency), "--lease", str(lease),
            "--rescue-interval", str(rescue), "--poll-interval", str(poll), *extra,
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
        worker = WorkerProcess(name, process, log)
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        """Stop every worker this fleet started."""
        for worker in self.workers:
            worker.stop()


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` every 50 ms until it is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def create_ledger(dsn: str) -> None:
    """Create the execution ledger table."""
    from tests.faults.ledger_app import LEDGER_DDL

    query(dsn, LEDGER_DDL)


@dataclass
class Verdict:
    """What the ledger says about a set of jobs, independently of the queue's state."""

    jobs: int
    lost: int
    duplicates: int
    reruns: int
    running: int
    states: dict[str, int]

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        """For the report."""
        return dict(self.__dict__)


def verdict(dsn: str, task: str = "tests.faults.ledger_app.record") -> Verdict:
    """Lost = no ledger row for a job's final attempt; duplicates = one attempt run twice."""
    [(jobs, lost, reruns)] = query(dsn, """
        SELECT count(*),
               count(*) FILTER (WHERE NOT EXISTS (
                   SELECT FROM fault_ledger l
                    WHERE l.job_id = j.id AND l.attempt = j.attempts AND l.kind = 'run')),
               count(*) FILTER (WHERE (SELECT count(*) FROM fault_ledger l
                                        WHERE l.job_id = j.id AND l.kind = 'run') > 1)
          FROM pgqueue.jobs j WHERE j.task = %s""", [task])  # fmt: skip
    [(dupes,)] = query(dsn, "SELECT coalesce(sum(dupes), 0)::int FROM fault_ledger")
    state_counts = dict(query(dsn, "SELECT state, count(*) FROM pgqueue.jobs GROUP BY state"))
    return Verdict(jobs, lost, dupes, reruns, state_counts.get("running", 0), state_counts)


def db_now(dsn: str) -> Any:
    """The database's clock."""
    return query(dsn, "SELECT now()")[0][0]


def all_done(dsn: str, count: int) -> Callable[[], bool]:
    """A condition: ``count`` jobs have reached a final state."""
    return lambda: query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs")[0][0] >= count


def enqueue_records(dsn: str, count: int, **options: Any) -> list[int]:
    """Enqueue ``count`` record jobs in one transaction."""
    import psycopg

    from tests.faults.ledger_app import record

    with psycopg.connect(dsn) as conn:
        ids = record.using(**options).enqueue_many(conn, [((i,), {}) for i in range(count)])
        conn.commit()
    return ids


def fleet_of(dsn: str, logs: Path) -> Iterator[Fleet]:
    """A fleet that is always stopped, whatever the test did."""
    fleet = Fleet(dsn, logs)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    from pgqueue._worker._liveness import process_started

    try:
        return process_started(pid) is not None  # None: a zombie
    except FileNotFoundError:
        return False
