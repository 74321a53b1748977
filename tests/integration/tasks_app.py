"""Tasks used by the integration tests (importable, so process tasks can find them)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import time
from typing import Any

import pgqueue

# Unknown tasks fail fast: tests insert rows of a task no app has ('x'), and wait for them to
# end; the rolling-deploy floor of their retries (60 s by default) is tested on apps of its own.
app = pgqueue.PgQueue(unknown_task_delay=0)
fast_retry = pgqueue.RetryPolicy(base=0.01, cap=0.05)


@app.task(queue="io")
async def add(a: int, b: int) -> int:
    """Return a + b."""
    return a + b


@app.task(queue="io", max_attempts=3, retry=fast_retry)
async def always_fails(message: str) -> None:
    """Raise every time."""
    raise RuntimeError(message)


def _logged(fn):  # type: ignore[no-untyped-def]
    """A user's decorator made with functools.wraps, under @app.task."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        return fn(*args, **kwargs)

    return wrapper


@app.task(queue="io")
@_logged
def decorated_pid() -> int:
    return os.getpid()


@app.task(queue="io")
def sync_pid() -> int:
    """Return the process id (sync: runs in a thread)."""
    return os.getpid()


@app.task(queue="cpu", executor="process")
def process_pid() -> int:
    """Return the process id (runs in the process pool)."""
    return os.getpid()


@app.task(queue="io")
async def sleepy(seconds: float) -> str:
    """Sleep, then return "slept"."""
    await asyncio.sleep(seconds)
    return "slept"


snoozed: set[int] = set()


@app.task(queue="io", max_attempts=5)
async def snoozes_once() -> str:
    """Ask to run again once without counting a failure, then succeed."""
    job_id = pgqueue.current_job().id
    if job_id in snoozed:
        return "done"
    snoozed.add(job_id)
    raise pgqueue.Retry(0)


@app.task(queue="io")
async def cancels_itself() -> None:
    """End the job as cancelled."""
    raise pgqueue.Cancel("not needed any more")


@app.task(queue="io", timeout=0.2, max_attempts=2, retry=fast_retry)
async def too_slow() -> None:
    """Exceed the task timeout."""
    await asyncio.sleep(5)


@app.task(queue="io", executor="thread")
def cooperative(seconds: float) -> str:
    """Sleep in steps until asked to stop (thread tasks learn it from the job context)."""
    import time

    job = pgqueue.current_job()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not job.cancelled.wait(0.05):
        pass
    return "stopped" if job.is_cancelled else "finished"


@app.task(queue="cpu", executor="process")
def spin(seconds: float) -> int:
    """Busy-sleep in a child process (only killing the child stops it early)."""
    import time

    time.sleep(seconds)
    return os.getpid()


@app.task(queue="cpu", executor="process")
def dies() -> None:
    """Kill the child process that runs it."""
    os._exit(3)


@app.task(queue="cpu", executor="process")
def dies_configured() -> None:
    """Kill the child running it with EX_CONFIG (78), the status of a refused child's start."""
    os._exit(78)


@app.task(queue="cpu", executor="process")
def raises_retry() -> None:
    """Raise pgqueue.Retry in the child: it must arrive in the parent as itself."""
    raise pgqueue.Retry(1.5)


@app.task(queue="io", max_attempts=3)
async def returns_a_set() -> set[int]:
    """Return something JSON cannot hold."""
    return {1, 2}


@app.task(queue="io")
async def async_pid() -> tuple[int, int]:
    """The process id and the job's attempt, read through current_job() (async)."""
    return os.getpid(), pgqueue.current_job().attempt


_context_mark: contextvars.ContextVar[int] = contextvars.ContextVar("mark", default=0)


@app.task(queue="io")
async def marks_context(n: int) -> list[int]:
    """Set a context variable; return what it held before and the job id (no await: inline)."""
    before = _context_mark.get()
    _context_mark.set(n)
    return [before, pgqueue.current_job().id]


@app.task(queue="io", max_attempts=1)
async def raises_unstorable_text(message: str) -> None:
    """Raise with a NUL and a lone surrogate in the message: text PostgreSQL cannot hold."""
    raise ValueError(message + "\x00 and \ud800")


@app.task(queue="io", max_attempts=1)
async def returns_a_lone_surrogate() -> str:
    """Return a string that is not valid UTF-8."""
    return "half a pair: \udc80"


@app.task(queue="io", max_attempts=3)
async def returns_deep_nesting() -> list[object]:
    """Return a list nested deeper than the JSON encoder's recursion allows."""
    value: list[object] = []
    for _ in range(5000):
        value = [value]
    return value


@app.task(queue="io", max_attempts=1)
async def raises_cancelled_error() -> None:
    """Await a future someone else cancelled: CancelledError comes from the task, not the worker."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


@app.task(queue="io", executor="thread", timeout=0.2, max_attempts=1)
def overruns_then_raises(seconds: float) -> None:
    """Ignore the timeout's request to stop, then raise once it has been given up on."""
    import time

    time.sleep(seconds)
    raise RuntimeError("raised after the timeout")


@app.task(queue="io", max_attempts=3, retry=fast_retry)
async def fails_slowly(seconds: float) -> None:
    """Sleep, then raise (an attempt that ends in a retry after a while)."""
    await asyncio.sleep(seconds)
    raise RuntimeError("slow failure")


@app.task(queue="cpu", executor="process")
def dies_leaving_a_grandchild(pid_file: str) -> None:
    """Fork a process that inherits this child's pipes and sleeps on; write its pid; die."""
    import time

    grandchild = os.fork()
    if grandchild == 0:
        time.sleep(120)
        os._exit(0)
    with open(pid_file, "w") as out:
        out.write(str(grandchild))
    os._exit(3)


@app.task(queue="io", max_attempts=1)
async def raises_its_own_timeout() -> None:
    """Raise a TimeoutError of the task's own (a wait_for of its own that expired)."""
    await asyncio.wait_for(asyncio.sleep(10), 0.01)


def setup_that_fails() -> None:
    """A child's set-up function (ProcessPool's ``setup``) that raises."""
    raise RuntimeError("no settings")


@app.task(queue="io", max_attempts=1)
async def raises_timeout_error() -> None:
    """Raise the task's own TimeoutError (a connect or a wait_for of its own timing out)."""
    raise TimeoutError("connect timed out")


@app.task(queue="io", max_attempts=1, executor="thread")
def raises_timeout_error_in_thread() -> None:
    """Raise the task's own TimeoutError (a socket's) in a thread."""
    raise TimeoutError("socket timed out")


@app.task(queue="io", timeout=0.2, max_attempts=1)
async def swallows_its_timeout() -> str:
    """Catch the CancelledError of its timeout and return a value anyway."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(5)
    return "finished after its timeout"


@app.task(queue="io", timeout=0.2, max_attempts=1)
async def ignores_its_timeout(seconds: float) -> str:
    """Swallow every cancellation for ``seconds`` seconds, then return."""
    end = asyncio.get_running_loop().time() + seconds
    while (left := end - asyncio.get_running_loop().time()) > 0:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(left)
    return "finished long after its timeout"


@app.task(queue="io", timeout=0.2, max_attempts=1)
def outlives_its_timeout_in_a_thread(seconds: float) -> None:
    """Sleep ``seconds`` seconds in its thread, which its timeout cannot interrupt."""
    time.sleep(seconds)


@app.task(queue="io", timeout=0.2, max_attempts=1)
async def turns_its_timeout_into_another_error() -> None:
    """Catch the CancelledError of its timeout and raise another error (as a client library
    that reports an aborted request does)."""
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        raise ConnectionAbortedError("request aborted") from None


def _fails_deep_in_the_child() -> None:
    raise ValueError("deep in the child")


@app.task(queue="cpu", executor="process", max_attempts=1)
def process_fails_deep() -> None:
    """Raise from a helper function, in a child process."""
    _fails_deep_in_the_child()


class HoldsALock(Exception):
    """An exception pickle cannot send: one of its attributes is a lock."""

    def __init__(self, message: str) -> None:
        import threading

        super().__init__(message)
        self.lock = threading.Lock()


class TakesTwo(Exception):
    """An exception pickle sends but cannot rebuild: its args are not its __init__'s."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"cannot reach {host}:{port}")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


class RefusesPickle(Exception):
    """An exception whose pickling raises an error that has no text itself."""

    def __reduce__(self) -> Any:
        raise _Unprintable()


@app.task(queue="cpu", executor="process", max_attempts=1)
def process_raises(kind: str) -> None:
    """Raise an exception that cannot cross the pipe as itself, in a child process."""
    if kind == "lock":
        raise HoldsALock("the real failure")
    if kind == "reduce":
        raise RefusesPickle("the real failure")
    if kind == "returned":  # a value, whose pickling fails the same way
        return RefusesPickle("a value")  # type: ignore[return-value]
    raise TakesTwo("db.internal", 5432)


@app.task(queue="cpu", executor="process", max_attempts=3)
def process_returns_a_generator(ledger: str) -> object:
    """Note a run in the file ``ledger``, then return what pickle cannot send back."""
    with open(ledger, "a") as f:
        f.write("ran\n")
    return (n for n in range(3))


@app.task(queue="io", timeout=0.2, max_attempts=2, retry=fast_retry)
async def steers_after_its_timeout(how: str) -> None:
    """Catch the CancelledError of its timeout and raise Retry or Cancel instead (as a
    middleware that maps a client library's "request aborted" onto them would)."""
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        raise (pgqueue.Retry(0) if how == "retry" else pgqueue.Cancel("gave up")) from None


@app.task(queue="cpu", executor="process", max_attempts=1)
def process_waits_for(path: str) -> str:
    """Wait in a child process (up to a minute) until the file ``path`` exists."""
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "opened"


@app.task(queue="io", max_attempts=1)
async def sleeps_in_a_group(seconds: float) -> None:
    """Sleep in two tasks of an asyncio.TaskGroup, one of which fails as it is cancelled (its
    clean-up raises): asyncio then raises the group's error in place of the CancelledError.
    One attempt: a failure would end the job."""

    async def cleanup_fails() -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            raise RuntimeError("clean-up failed") from None

    async with asyncio.TaskGroup() as group:
        group.create_task(cleanup_fails())
        group.create_task(asyncio.sleep(seconds))


@app.task(queue="io", max_attempts=1)
async def cancels_when_stopped(seconds: float) -> None:
    """Sleep, and end its own job with Cancel once the worker stops it (a task that reads any
    cancellation as the end of its job)."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        raise pgqueue.Cancel("stopped") from None
