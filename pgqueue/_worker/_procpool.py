"""A process pool that can kill and replace one child: one process per slot.

``concurrent.futures.ProcessPoolExecutor`` cannot stop a single call: a task that overran its
timeout, was cancelled or lost its lease would keep its process busy, and a child that dies breaks
the whole pool. Here every slot owns one child and a pipe; the caller waits on the pipe from the
event loop, and giving up on a call kills that child. The next call starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from pgqueue._errors import ResultUnsent, exception_text
from pgqueue._logging import configure_logging, configured_logging
from pgqueue._worker._context import JobContext, _current
from pgqueue._worker._liveness import is_dead, started_if_readable, this_process

log = logging.getLogger("pgqueue.worker")

_WATCH_INTERVAL = 0.25  # seconds between a child's checks that its worker still lives


class ChildLost(Exception):
    """The child process died (or was killed) before it answered."""


class RemoteError(Exception):
    """An exception raised in a child that could not be sent back as itself."""


class ChildTraceback(Exception):
    """The traceback, as text, of an exception a child sent back: the cause it is raised with
    in the parent, where its frames (the task's own) would be lost, as pickling drops them."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


class _Raised:
    """An exception as a child sends it: unpickled, it is itself again, caused by its
    traceback (as ``concurrent.futures`` sends one back)."""

    def __init__(self, exc: BaseException, text: str | None = None) -> None:
        self.exc = exc
        self.text = "".join(traceback.format_exception(exc)) if text is None else text

    def __reduce__(self) -> tuple[Any, tuple[BaseException, str]]:
        return (_caused_by_traceback, (self.exc, self.text))


def _caused_by_traceback(exc: BaseException, text: str) -> BaseException:
    exc.__cause__ = ChildTraceback(text)
    return exc


def _sendable(exc: BaseException) -> _Raised:
    """``exc`` as the child sends it back; a RemoteError naming it, with its traceback, if it
    cannot cross the pipe (a lock in its attributes; an ``__init__`` that its args, all that
    pickle keeps, do not fit): that failure was all the parent heard of it."""
    raised = _Raised(exc)
    try:
        pickle.loads(pickle.dumps(raised))
    except Exception as why:
        note = f"(not sent back as itself: {type(why).__name__}: {exception_text(why)})"
        error = RemoteError(f"{type(exc).__qualname__}: {exception_text(exc)} {note}")
        return _Raised(error, raised.text)
    return raised


class _Slot:
    """One child process and the parent's end of its pipe."""

    def __init__(self, context: BaseContext, setup: tuple[str, str] | None = None) -> None:
        parent, child = context.Pipe()
        self.conn: Connection = parent
        self.process: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            args=(child, os.getpid(), this_process()[1], setup, configured_logging()),
            daemon=True,
            name="pgqueue-process-task",
        )
        self.process.start()
        child.close()
        self.started = started_if_readable(self.process.pid)  # None without /proc

    async def call(self, message: tuple[Any, ...]) -> Any:
        """Send one call and wait for its answer without blocking the event loop."""
        try:
            self.conn.send(message)
            await self._answer()
            ok, value = self.conn.recv()
        except (EOFError, OSError):
            raise ChildLost() from None
        except Exception as exc:  # the answer arrived whole but cannot be unpickled here
            raise RemoteError(f"{type(exc).__name__}: {exc}") from exc
        if ok:
            return value
        raise value

    async def _answer(self) -> None:
        """Wait until the child's answer can be read, or raise ``EOFError`` once it has ended.

        Its pipe alone cannot tell: a process the task forked holds the child's end open. The
        sentinel tells when the child ends, or (forkserver) when the forkserver does: a
        child still there is then waited for on its pipe alone."""
        loop = asyncio.get_running_loop()
        fds = [self.conn.fileno(), self.process.sentinel]
        while True:
            woken: asyncio.Future[None] = loop.create_future()
            for fd in fds:
                loop.add_reader(fd, _resolve, woken)
            try:
                await woken
            finally:
                for fd in fds:
                    loop.remove_reader(fd)
            if self.conn.poll():
                return
            if is_dead(self.process.pid, self.started):  # type: ignore[arg-type]
                raise EOFError
            fds = fds[:1]

    def kill(self) -> None:
        """Kill the child now and release the pipe."""
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class ProcessPool:
    """At most ``size`` children; a call that is abandoned takes its child down with it."""

    def __init__(self, size: int, setup: tuple[str, str] | None = None) -> None:
        """``setup``: the (module, name) of a function each child calls before its first call
        (Django's set-up, so that task modules can import their models). If it returns a
        callable, that makes every call: ``around(fn, args, kwargs)``."""
        method = "forkserver" if sys.platform == "linux" else "spawn"
        self._context = multiprocessing.get_context(method)
        self._setup = setup
        self._idle: list[_Slot] = []
        self._free = asyncio.Semaphore(max(size, 1))
        self.recycled = 0

    async def run(
        self,
        where: tuple[str, str],
        args: Any,
        kwargs: Any,
        fields: Any,
        timer: asyncio.Timeout | None = None,
    ) -> Any:
        """Call the registered function at ``where`` in a child; raises ``ChildLost`` if it dies.

        Cancelling the caller (timeout, cancel request, lost lease) kills the child. ``timer``,
        the caller's timeout, stops while the call waits for a free child.
        """
        await self._turn(timer)
        try:
            slot = await self._take()
            try:
                result = await slot.call((where, args, kwargs, fields))
            except BaseException as exc:
                if isinstance(exc, ChildLost | asyncio.CancelledError):
                    self.recycled += 1
                    slot.kill()
                    if isinstance(exc, ChildLost):
                        _report_lost(slot.process, fields[0])
                else:
                    self._idle.append(slot)
                raise
            self._idle.append(slot)
            return result
        finally:
            self._free.release()

    async def _turn(self, timer: asyncio.Timeout | None) -> None:
        """Wait until a child is free for one more call. ``timer`` does not run meanwhile: a
        job claimed while every child is busy timed out without having run."""
        when = timer.when() if timer is not None and not timer.expired() else None
        if timer is None or when is None or not self._free.locked():
            await self._free.acquire()
            return
        loop = asyncio.get_running_loop()
        left = when - loop.time()
        timer.reschedule(None)
        try:
            await self._free.acquire()
        finally:  # cancelled too: a middleware's own timeout may go on to call again
            timer.reschedule(loop.time() + left)

    async def _take(self) -> _Slot:
        """An idle child, or a new one: an idle child that died meanwhile (the OOM killer, an
        operator) is replaced, or the job handed to it would fail as a lost worker."""
        while self._idle:
            slot = self._idle.pop()
            if slot.process.is_alive():
                return slot
            slot.kill()  # reaps it and closes its pipe
        # Starting a child (and the first time, the forkserver) blocks: keep it off the loop.
        return await asyncio.to_thread(_Slot, self._context, self._setup)

    def shutdown(self) -> None:
        """Kill every idle child (busy ones are killed when their callers are cancelled)."""
        for slot in self._idle:
            slot.kill()
        self._idle.clear()


def _report_lost(process: BaseProcess, job_id: int) -> None:
    """Log how the child that ran ``job_id`` ended: the job's error says only "worker lost"."""
    code = process.exitcode
    how = f"exited with status {code}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):  # a number the signal module has no name for
            how = f"was killed by {signal.Signals(-code).name}"
    log.warning(
        "job %s: its child process %s %s before it answered; the attempt ends as worker lost",
        job_id, process.pid, how,
        extra={"action": "child_lost", "job_id": job_id, "pid": process.pid, "exit_code": code},
    )  # fmt: skip


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _child_main(
    conn: Connection,
    worker_pid: int,
    worker_started: int | None,
    setup: tuple[str, str] | None,
    logs: tuple[str, str] | None = None,
) -> None:
    """The child's loop: receive a call, run it, send back (ok, value). ``logs``: the
    ``configure_logging`` arguments of the worker's process, if it was set up so (the CLI):
    the child's records and warnings are then written as the worker's are, JSON lines too."""
    # The worker ends its children itself (SIGKILL). A Ctrl-C in a terminal, or a SIGTERM from
    # a supervisor, reaches the whole process group: it must not end the call the worker's
    # graceful stop lets finish. A handler, not SIG_IGN: the task's own subprocesses get the
    # default action back at exec.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _ignore)
    threading.Thread(
        target=_watch_worker, args=(worker_pid, worker_started), daemon=True,
        name="pgqueue-worker-watch",
    ).start()  # fmt: skip
    failed_setup: BaseException | None = None
    setup_trace: TracebackType | None = None
    around: Any = None  # what the setup function returned: it makes each call, if given
    if setup is not None:
        try:
            around = getattr(importlib.import_module(setup[0]), setup[1])()
        except BaseException as exc:  # every call then fails with it, as the job's error
            failed_setup, setup_trace = exc, exc.__traceback__
    if logs is not None:  # after the setup, as in the worker (Django's comes before the CLI's)
        configure_logging(*logs)
    while True:
        try:
            where, args, kwargs, fields = conn.recv()
        except EOFError:
            return
        if _gone(worker_pid, worker_started):
            # Sent before the worker died, read since (by a child still starting, say): its
            # job is rescued and runs again elsewhere. The watch would end this copy only at
            # its next look, after it had run for up to _WATCH_INTERVAL.
            return
        try:
            if failed_setup is not None:  # its own traceback, not one frame more per call
                raise failed_setup.with_traceback(setup_trace)
            answer: tuple[bool, Any] = (True, _call(where, args, kwargs, fields, around))
        except BaseException as exc:  # a task's SystemExit must not end the child silently
            answer = (False, _sendable(exc))
        try:
            conn.send(answer)
        except Exception as exc:  # a return value pickle refuses
            unsent = ResultUnsent if answer[0] else RemoteError
            conn.send((False, unsent(f"{type(exc).__name__}: {exception_text(exc)}")))


def _ignore(signum: int, frame: Any) -> None:
    """A signal handler that does nothing."""


def _watch_worker(pid: int, started: int | None) -> None:
    """End this child soon after the worker that owns it dies: its job is rescued and runs
    again elsewhere, so this copy must not go on. (The kernel's parent-death signal cannot
    do it: a forkserver child's parent is the forkserver, which outlives the worker while any
    child lives.)"""
    while True:
        time.sleep(_WATCH_INTERVAL)
        if _gone(pid, started):
            os._exit(1)


def _gone(pid: int, started: int | None) -> bool:
    """Whether the worker (``pid``, started at ``started``) has ended, as far as can be told.

    Without its start time (no /proc) a forkserver child's parent is the forkserver, not the
    worker: only a pid that no longer exists says it has ended (a reused one goes unseen)."""
    if started is not None:
        return is_dead(pid, started)
    if os.getppid() == pid:  # spawned by the worker itself
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        pass
    return False


def _call(where: tuple[str, str], args: Any, kwargs: Any, fields: Any, around: Any = None) -> Any:
    """Import the registered task's module and call its function with a job context."""
    module, qualname = where
    fn = lookup(importlib.import_module(module), qualname)
    if fn is None:
        raise LookupError(f"{module}.{qualname} not found in the child process")
    _current.set(JobContext(*fields))
    result = fn(*args, **kwargs) if around is None else around(fn, args, kwargs)
    if inspect.iscoroutine(result):  # an async task isolated after a crash
        return asyncio.run(result)  # its task copies the context set above
    return result


def lookup(module: Any, qualname: str) -> Any:
    """The function at ``qualname`` in ``module`` (unwrapping the Task a module attribute
    holds), or ``None``: how a child finds a task, and how the worker checks that it will."""
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return getattr(target, "fn", target)
