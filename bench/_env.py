"""The bench's database and worker processes."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench import _sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def add_server_option(parser: argparse.ArgumentParser) -> None:
    """``--server``: where a bench command runs (see :func:`bench_server`)."""
    parser.add_argument("--server", choices=["auto", "private", "local", "env"], default="auto",
                        help="private: a throwaway server with default settings (auto prefers "
                             "PGQUEUE_BENCH_DSN, then private, then 127.0.0.1:5432)")  # fmt: skip


@contextlib.contextmanager
def bench_server(where: str) -> Iterator[str]:
    """The admin DSN of the server to bench on.

    ``env``: PGQUEUE_BENCH_DSN; ``local``: the local server; ``private``: a throwaway server
    with the default configuration; ``auto``: the first of env, private, local available.
    """
    from bench import _server

    if where == "auto":
        where = "env" if os.environ.get("PGQUEUE_BENCH_DSN") else (
            "private" if _server.available() else "local")  # fmt: skip
    if where == "private":
        with _server.private_server() as dsn:
            yield dsn
    else:
        yield os.environ.get("PGQUEUE_BENCH_DSN") if where == "env" else DEFAULT_SERVER  # type: ignore[misc]


@contextlib.contextmanager
def bench_database(admin: str, keep: bool = False, prefix: str = "pgqueue_bench") -> Iterator[str]:
    """A dedicated, migrated database for one bench run (never a test database)."""
    from pgqueue import migrate

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin, dbname=name)
    try:
        migrate(dsn)
        execute(dsn, _sql.BARE_CREATE)
        yield dsn
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(name)))


def execute(dsn: str, statement: Any, params: Sequence[Any] | None = None) -> list[Any]:
    """Run one statement in autocommit and return its rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def reset(dsn: str) -> None:
    """Empty every table the scenarios write, and let the planner see it."""
    execute(dsn, _sql.RESET)
    execute(dsn, "VACUUM ANALYZE pgqueue.active_jobs, pgqueue.finished_jobs, bench.bare_jobs")


def checkpoint(dsn: str) -> None:
    """CHECKPOINT, so that a measurement does not pay for the WAL its predecessor wrote (a
    no-op for roles that may not, e.g. on a PGQUEUE_BENCH_DSN server)."""
    with contextlib.suppress(psycopg.Error):
        execute(dsn, "CHECKPOINT")


def hold_snapshot(dsn: str) -> psycopg.Connection[Any]:
    """A session of ``dsn`` that keeps a REPEATABLE READ snapshot open, as a report left open
    would: no row version that dies from now on can be removed until it is closed."""
    report = psycopg.connect(dsn)
    report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    report.execute("SELECT 1").fetchall()  # the snapshot is taken here and kept
    return report


def fill_jobs(dsn: str, n: int, task: str = "bench.tasks.noop") -> None:
    """Queue ``n`` jobs of ``task`` in one statement, then ANALYZE."""
    execute(dsn, _sql.JOBS_FILL, [task, n])
    execute(dsn, "ANALYZE pgqueue.active_jobs")


def schedule_jobs(dsn: str, n: int, priority: int) -> None:
    """Queue ``n`` jobs due tomorrow at ``priority`` in one statement, then VACUUM ANALYZE."""
    execute(dsn, _sql.JOBS_SCHEDULE_FILL, [priority, n])
    execute(dsn, "VACUUM ANALYZE pgqueue.active_jobs")


def cpu_times() -> tuple[int, int] | None:
    """``(steal, total)``: CPU time of all cores since boot, in ticks, from /proc/stat (Linux).

    Steal is time a virtual CPU was ready to run while the hypervisor ran someone else: on a
    shared host it slows every figure, bare limits and pgqueue alike, by its own amount.
    """
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    ticks = [int(v) for v in fields[1:9]]
    return (ticks[7], sum(ticks)) if fields[0] == "cpu" and len(ticks) == 8 else None


def steal_pct(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen between two :func:`cpu_times` samples, in percent."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100 * (after[0] - before[0]) / (after[1] - before[1])


def worker_command(*options: str) -> list[str]:
    """The real CLI, as an operator runs it, on the bench's app."""
    return [sys.executable, "-m", "pgqueue", "--app", "bench.tasks:app", "--log-level",
            "warning", "worker", *options]  # fmt: skip


def start_worker(
    dsn: str, *options: str, stop_after: int = 0, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start one worker process on ``dsn`` (``env_extra`` over this process's environment)."""
    env = dict(os.environ, PGQUEUE_DSN=dsn, PGQUEUE_BENCH_STOP_AFTER=str(stop_after))
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(worker_command(*options), env=env, cwd=ROOT)


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGTERM and wait (SIGKILL if it hangs)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def wait_for_value(
    dsn: str, statement: Any, predicate: Any, timeout: float, interval: float = 0.05
) -> bool:
    """Poll the first value of ``statement`` on one open connection until ``predicate`` holds.

    A drain is watched while it runs: a connection per poll forked a backend each time, and with
    ``count(*)`` that cost about 17 ms per poll, 8 % of this machine's two cores at ten polls a
    second, taken from the workers being measured and not from the bare loops beside them.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:

        def first() -> Any:
            row = conn.execute(statement).fetchone()
            assert row is not None, "the statement returned no row"
            return row[0]

        return wait_for(lambda: predicate(first()), timeout, interval)


def wait_drained(dsn: str, timeout: float = 600, interval: float = 0.1) -> bool:
    """Wait until ``pgqueue.active_jobs`` holds no job (EXISTS stops at the first live row)."""
    return wait_for_value(dsn, _sql.ACTIVE_ANY, lambda left: not left, timeout, interval)
