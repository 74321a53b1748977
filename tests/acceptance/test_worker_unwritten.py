"""A worker stopped while the database refuses its connections: the outcomes it could not write
are named in one ERROR and a one-line exit message, not a traceback."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.acceptance.conftest import wait_for
from tests.acceptance.test_cli import enqueue, running
from tests.helpers import query


@pytest.fixture
def closed_later(ledger: str) -> Iterator[tuple[str, str]]:
    """The test database and its name; connections are allowed again at the end."""
    name = str(conninfo_to_dict(ledger)["dbname"])
    other = psycopg.conninfo.make_conninfo(ledger, dbname="postgres")
    yield ledger, name
    query(other, sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))


def cut_off(dsn: str, name: str) -> None:
    """Make database ``name`` refuse connections, and end the worker's."""
    other = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    query(other, sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
    query(other, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                 " AND application_name LIKE 'pgqueue %%'", [name])  # fmt: skip


def stopped_cut_off(
    closed_later: tuple[str, str], spawn_worker: Any, seconds: float, shutdown_timeout: str
) -> tuple[subprocess.Popen[str], str]:
    """A worker running a sync job of ``seconds``, stopped (SIGTERM) once the database refuses
    connections and has ended the worker's: the worker, and what it wrote till it exited."""
    dsn, name = closed_later
    enqueue(dsn, "sleeps", [(seconds,)])
    worker = spawn_worker("--shutdown-timeout", shutdown_timeout)
    wait_for(lambda: running(dsn) == 1, what="a running job")
    cut_off(dsn, name)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    return worker, out


def test_a_worker_whose_last_outcomes_cannot_be_written_says_so_and_exits_1(
    closed_later: tuple[str, str], spawn_worker
) -> None:
    """The job's task is still running when the database stops accepting connections (the
    worker's are ended): its outcome cannot be written, nor at the stop. The worker logs one
    ERROR naming how many outcomes were left and what becomes of their jobs, ends with a
    one-line message that says the same, exits 1, and prints no traceback for it. (It used to
    end with "Error: cannot reach the database: ...", which named neither.)"""
    worker, out = stopped_cut_off(closed_later, spawn_worker, 3, "10")
    assert worker.returncode == 1, out
    lines = out.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if "ERROR" in line and "outcome" in line]
    assert len(errors) == 1, out
    assert "1 outcome unwritten" in lines[errors[0]] and "leases expire" in lines[errors[0]]
    assert "Traceback" not in "\n".join(lines[errors[0] :]), out  # the stop's own lines
    assert lines[-1].startswith("Error: the worker stopped with 1 outcome unwritten"), out
    assert "leases expire" in lines[-1], out


def test_a_worker_whose_stop_fails_does_not_wait_for_its_abandoned_thread(
    closed_later: tuple[str, str], spawn_worker
) -> None:
    """A sync task still running at the shutdown timeout is abandoned, and the worker exits
    without waiting for its thread; but a stop whose last writes failed (here, putting that
    job back) raised out of the worker before the exit that does not wait, and the process
    then waited for the thread (an hour here). It exits 1 at once, with its one-line
    message."""
    worker, out = stopped_cut_off(closed_later, spawn_worker, 3600, "0.1")
    assert worker.returncode == 1, out
    assert out.strip().splitlines()[-1].startswith("Error: cannot reach the database"), out


def test_a_worker_whose_last_outcomes_cannot_be_written_exits_1_leaving_an_abandoned_thread(
    closed_later: tuple[str, str], spawn_worker
) -> None:
    """As above, and another job's thread outlasts the shutdown timeout (abandoned, as at any
    stop): the worker still exits 1 at once with its one-line message. It waited for that
    thread to end, the exit that leaves abandoned threads behind being taken only after a
    stop that raised nothing."""
    dsn, name = closed_later
    enqueue(dsn, "sleeps", [(3,), (600,)])
    worker = spawn_worker("--shutdown-timeout", "10")
    wait_for(lambda: running(dsn) == 2, what="two running jobs")
    cut_off(dsn, name)
    worker.send_signal(signal.SIGTERM)
    try:
        out, _ = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker waits for its abandoned thread") from None
    assert worker.returncode == 1, out
    lines = out.strip().splitlines()
    assert lines[-1].startswith("Error: the worker stopped with 1 outcome unwritten"), out
