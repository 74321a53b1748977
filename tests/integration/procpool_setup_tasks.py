"""An app with a process set-up, for the tests of ``@app.process_setup`` (importable: a child
finds its set-up and tasks by name)."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pgqueue

app = pgqueue.PgQueue()
seen: dict[str, Any] = {"setups": 0, "calls": 0, "inside": False}


@app.process_setup
def set_up_child() -> Any:
    """Count the set-ups of this child; each call then runs inside ``_in_call``."""
    seen["setups"] += 1
    seen["set_up_in"] = os.getpid()
    return _in_call


@contextlib.contextmanager
def _in_call() -> Iterator[None]:
    seen["inside"] = True
    try:
        yield
    finally:
        seen["inside"] = False
        seen["calls"] += 1


@app.task(queue="cpu", executor="process", max_attempts=1)
def report() -> dict[str, Any]:
    """What this child's set-up and wrap did so far, as seen from inside a call."""
    return {**seen, "pid": os.getpid()}


failing = pgqueue.PgQueue()


@failing.process_setup
def set_up_fails() -> None:
    """A set-up that raises: every job of its child fails with this error."""
    raise RuntimeError("the model file is missing")


@failing.task(queue="cpu", executor="process", max_attempts=1)
def never_runs() -> int:
    """A task whose child's set-up failed."""
    return 1


def returns_no_function() -> int:
    """A set-up returning neither None nor a function."""
    return 42


def set_up_suppressing() -> Any:
    """A set-up whose context manager swallows every error of a call."""
    return functools.partial(contextlib.suppress, Exception)


def fails() -> None:
    """A task that raises."""
    raise ValueError("lost in the wrap")


def once_failed_marker() -> Path:
    """The file saying that a set-up failed once for this pool (its process's pid)."""
    parent = multiprocessing.parent_process()
    pid = os.getpid() if parent is None else parent.pid
    return Path(tempfile.gettempdir()) / f"pgqueue-setup-failed-once-{pid}"


def set_up_fails_once() -> None:
    """A set-up that fails the first time for its pool (a download that timed out), then
    succeeds."""
    marker = once_failed_marker()
    if not marker.exists():
        marker.touch()
        raise RuntimeError("the download timed out")
