"""Fixtures for running the real CLI in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import query

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.app_under_test:app"


def cli_env(dsn: str, **extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess on ``dsn``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGQUEUE_")}
    env.update(PGQUEUE_DSN=dsn, PGQUEUE_APP=APP, PYTHONPATH=str(ROOT), **extra)
    return env


def cli(
    dsn: str, *args: str, timeout: float = 120, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``pgqueue ARGS`` to completion, without the variables ``unset``."""
    env = {k: v for k, v in cli_env(dsn).items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def ledger(dsn: str) -> str:
    """Create the execution ledger: one row per (job, attempt) actually run."""
    query(
        dsn, "CREATE TABLE ledger (job_id bigint, attempt int, pid int, UNIQUE (job_id, attempt))"
    )
    return dsn


@pytest.fixture
def spawn_worker(dsn: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``pgqueue worker`` subprocesses; any left running are killed at the end."""
    started: list[subprocess.Popen[str]] = []

    def spawn(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "worker", "--queues", "io", "--poll-interval",
             "0.1", *args],
            env=cli_env(dsn), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll ``condition`` every 50 ms until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


def usage_error(stderr: str) -> str:
    """The error line of a usage error: click's usage and hint, then one "Error: " line."""
    lines = stderr.strip().splitlines()
    assert lines[0].startswith("Usage: pgqueue ") and "Traceback" not in stderr, stderr
    assert [line for line in lines if line.startswith("Error: ")] == lines[-1:], stderr
    return lines[-1]
