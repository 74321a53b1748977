"""Process tasks for the process pool's own tests (importable: a child finds them by name)."""

from __future__ import annotations

import os
from typing import Any

import pgqueue

app = pgqueue.PgQueue()


def _refused_here() -> None:
    raise RuntimeError("no reading this back")


class ReadInChildOnly:
    """A value the child pickles, but whose unpickling raises (as a class the worker cannot
    import would, or a ``__setstate__`` that needs what only the child has)."""

    def __reduce__(self) -> Any:
        return (_refused_here, ())


@app.task(queue="cpu", executor="process", max_attempts=3)
def returns_unreadable() -> ReadInChildOnly:
    """Return a value the worker cannot unpickle."""
    return ReadInChildOnly()


@app.task(queue="cpu", executor="process", max_attempts=3, store_result=False)
def returns_unreadable_unstored() -> ReadInChildOnly:
    """Return a value the worker cannot unpickle, from a task whose result is not stored."""
    return ReadInChildOnly()


def pids() -> tuple[int, int]:
    """This child's pid and its parent's (the forkserver's)."""
    return os.getpid(), os.getppid()


def size(data: str) -> int:
    """The length of ``data``."""
    return len(data)


def exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie not yet reaped does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def leaves_a_thread() -> int:
    """Start a thread that never ends and is no daemon, so that this child cannot exit by
    itself (as a library's background thread would hold it); this child's pid."""
    import threading
    import time

    threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()
    return os.getpid()


def blocked_signals() -> tuple[list[int], int]:
    """The signals this child blocks, and the mask of those a program it runs blocks."""
    import signal
    import subprocess

    status = subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True)
    theirs = int(status.stdout.split("SigBlk:")[1].split()[0], 16)
    return sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])), theirs
