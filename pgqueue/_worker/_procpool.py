"""A process pool that can kill and replace one child: one process per slot.

``concurrent.futures.ProcessPoolExecutor`` cannot stop a single call: a task that overran its
timeout, was cancelled or lost its lease would keep its process busy, and a child that dies breaks
the whole pool. Here every slot owns one child and a pipe; the caller waits on the pipe from the
event loop, and giving up on a call kills that child. The next call starts a fresh one.
What runs in the child is in ``_procchild``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import struct
import sys
import threading
from collections.abc import Iterator
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from pgqueue._errors import ResultUnsent, exception_text
from pgqueue._logging import configured_logging
from pgqueue._worker._config import CHILD_START_TIMEOUT
from pgqueue._worker._liveness import is_dead, started_if_readable, this_process
from pgqueue._worker._procchild import (
    _READY,
    _RETURNED,
    _UNREADY,
    GROUP_SIGNALS,
    REFUSED_EXIT,
    RemoteError,
    Setups,
    _child_main,
)

log = logging.getLogger("pgqueue.worker")

_RETIRE_GRACE = 5.0  # seconds a retired child has to exit by itself before it is killed
# Seconds a lost child's forkserver has to write its exit status (see _Slot.status_written).
_STATUS_WAIT = 1.0
_READ_SIZE = 1 << 20  # the most bytes of an answer read at a time


class ChildLost(Exception):
    """The child process died (or was killed) before it answered."""


class ChildStartTimeout(Exception):
    """A new child was not ready for its first call within the pool's start limit (the app's
    set-up in it hung): it was killed, and the call fails as the task's error, to be retried
    as one (not as a lost worker: the task never ran, so its next attempt needs no isolation;
    but a job isolated after a crash stays isolated: see ``JobExecutor._in_process``)."""


class ChildRefused(Exception):
    """A new child exited as it started, refusing to run a worker (see
    ``refuse_in_a_child_start``): the main script, run again in it, has no
    ``if __name__ == "__main__":`` guard. The call fails as the task's error, as for
    ``ChildStartTimeout``, its message saying what to change."""

    def __str__(self) -> str:
        return (
            "its child process exited as it started: the main script, run again in every"
            " child, started a worker there; start the worker under"
            ' `if __name__ == "__main__":` in that script'
        )


class ResultUnread(ResultUnsent):
    """A process task returned a value its child pickled but the parent cannot unpickle (a
    class it cannot import, a ``__setstate__`` that raises here): its work is done, so its job
    ends as with a value the child cannot send, not as a failure to retry."""

    why = "could not be read back from its child process"


class _Slot:
    """One child process and the parent's end of its pipe."""

    def __init__(self, context: BaseContext, setups: Setups = ()) -> None:
        parent, child = context.Pipe()
        self.conn: Connection = parent
        self.process: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            args=(child, os.getpid(), this_process()[1], setups, configured_logging()),
            daemon=True,
            name="pgqueue-process-task",
        )
        with held_signals():
            self.process.start()
        child.close()
        # Only the parent's end (the child's is a socket of its own): it is read and written
        # a piece at a time as the pipe allows, never waited on with the event loop held.
        os.set_blocking(parent.fileno(), False)
        self.started = started_if_readable(self.process.pid)  # None without /proc
        self.forkserver = context.get_start_method() == "forkserver"
        self.orphaned = False  # its forkserver ended while it lived: see _wait
        self.calls = 0  # calls it answered
        self.unready = False  # its set-up failed: each of its calls fails with that error

    async def ready(self) -> None:
        """Wait until the child has set itself up and waits for calls (``EOFError`` if it
        ended first)."""
        said = await self._recv()
        if said not in (_READY, _UNREADY):
            raise EOFError
        self.unready = said == _UNREADY

    async def call(self, message: tuple[Any, ...]) -> Any:
        """Send one call and wait for its answer without blocking the event loop."""
        try:
            await self._send(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
            answer = await self._recv()
        except (EOFError, OSError):
            raise ChildLost() from None
        self.calls += 1
        return _read(answer)

    async def _send(self, data: bytes) -> None:
        """Write ``data`` framed as ``Connection.send_bytes`` frames it, but without blocking
        the event loop on a child slow to read it (stopped, swapped out): 20 MB of arguments
        written to a child still starting froze the loop (every other job, the heartbeats)
        for most of a second, when calls did not wait for ``ready``."""
        fd = self.conn.fileno()
        size = len(data)
        header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
        for chunk in [header + data] if size <= 16384 else [header, data]:
            view = memoryview(chunk)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await self._wait(write=True)

    async def _recv(self) -> bytearray:
        """Read one message framed as ``Connection.send_bytes`` frames it, as it arrives: a big
        answer read at once, when the pipe became readable, held the loop until its last byte
        came (0.05 to 0.2 s for 20 MB)."""
        (size,) = struct.unpack("!i", await self._read_exactly(4))
        if size == -1:
            (size,) = struct.unpack("!Q", await self._read_exactly(8))
        return await self._read_exactly(size)

    async def _read_exactly(self, size: int) -> bytearray:
        """``size`` bytes from the pipe, waiting for each piece (``EOFError`` at its end)."""
        data = bytearray()
        fd = self.conn.fileno()
        while len(data) < size:
            try:
                piece = os.read(fd, min(size - len(data), _READ_SIZE))
            except BlockingIOError:
                await self._wait()
                continue
            if not piece:
                raise EOFError
            data += piece
        return data

    async def _wait(self, write: bool = False) -> None:
        """Wait until the pipe can be written (``write``) or the child's answer read, or raise
        ``EOFError`` once the child has ended.

        Its pipe alone cannot tell: a process the task forked holds the child's end open. The
        sentinel tells when the child ends, or (forkserver) when the forkserver does: a
        child still there is then waited for on its pipe alone."""
        loop = asyncio.get_running_loop()
        fd = self.conn.fileno()
        watch, unwatch = (
            (loop.add_writer, loop.remove_writer)
            if write
            else (loop.add_reader, loop.remove_reader)
        )
        while True:
            woken: asyncio.Future[bool] = loop.create_future()
            watch(fd, _resolve, woken, False)
            sentinel = None if self.orphaned else self.process.sentinel
            if sentinel is not None:
                loop.add_reader(sentinel, _resolve, woken, True)
            try:
                by_sentinel = await woken
            finally:
                unwatch(fd)
                if sentinel is not None:
                    loop.remove_reader(sentinel)
            if not by_sentinel or (not write and self.conn.poll()):
                return
            if is_dead(self.process.pid, self.started):  # type: ignore[arg-type]
                raise EOFError
            self.orphaned = True

    async def status_written(self, timeout: float = _STATUS_WAIT) -> bool:
        """Wait, at most ``timeout`` seconds, until the sentinel of a child found dead can be
        read: its forkserver has written the child's exit status there, or has ended. The end
        of the child's pipe can come first (a forkserver killed a moment before its child):
        forkserver_gone, asked then, said no, and the status read later was 255. False if the
        wait ran out (a forkserver slow to write, or to die: see _report_lost)."""
        if not self.forkserver or self.orphaned:
            return True
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[Any] = loop.create_future()
        loop.add_reader(self.process.sentinel, _resolve, readable, None)
        try:
            async with asyncio.timeout(timeout):
                await readable
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self.process.sentinel)
        return True

    def forkserver_gone(self) -> bool:
        """Whether the forkserver that started this child has ended, so that the child's exit
        status is lost (multiprocessing then reports 255): call it before ``kill``. Its
        sentinel is a pipe the forkserver writes the status to; readable but empty, it has
        been closed."""
        if self.orphaned:
            return True
        # Not .exitcode: it would read the sentinel. Already read (multiprocessing polls its
        # children at each start), it is at its end whether or not the forkserver lives.
        popen = getattr(self.process, "_popen", None)
        if not self.forkserver or getattr(popen, "returncode", None) is not None:
            return False
        import fcntl  # Linux's, as forkserver is here
        import termios

        sentinel = self.process.sentinel
        if not wait([sentinel], timeout=0):
            return False
        waiting = bytearray(4)
        fcntl.ioctl(sentinel, termios.FIONREAD, waiting)
        return int.from_bytes(waiting, sys.byteorder) == 0

    def kill(self) -> asyncio.Future[None] | None:
        """Kill the child now and release the pipe; it is reaped off the event loop."""
        with contextlib.suppress(OSError):
            self.process.kill()
        self.conn.close()
        return _reap(self.process)

    def retire(self) -> None:
        """End an idle child between calls: closing its pipe ends its loop, so that it exits
        as a process does (its ``atexit`` functions, its logs flushed); killed if it does not
        within ``_RETIRE_GRACE`` seconds (a process the worker forked holds the pipe)."""
        self.conn.close()
        _reap(self.process, _RETIRE_GRACE)


class ProcessPool:
    """At most ``size`` children; a call that is abandoned takes its child down with it."""

    def __init__(
        self,
        size: int,
        setups: Setups = (),
        max_tasks_per_child: int | None = None,
        start_timeout: float = CHILD_START_TIMEOUT,
    ) -> None:
        """``setups``: the (module, name) of each function a child calls, in order, before its
        first call (Django's set-up, then the app's ``process_setup``): see ``_procchild``.
        ``max_tasks_per_child``: calls a child answers before it is replaced (``None``: no
        limit), between calls, so that what a task leaks (memory, file handles) is freed.
        ``start_timeout``: seconds a new child has to get ready (``ChildStartTimeout``)."""
        method = "forkserver" if sys.platform == "linux" else "spawn"
        self._context = multiprocessing.get_context(method)
        self._setups = setups
        self._max_calls = max_tasks_per_child
        self._start_timeout = start_timeout
        self._idle: list[_Slot] = []
        self._free = asyncio.Semaphore(max(size, 1))
        self.recycled = 0  # children killed: lost, or abandoned by their caller
        self.retired = 0  # children replaced after max_tasks_per_child calls

    async def run(
        self,
        where: tuple[str, str],
        args: Any,
        kwargs: Any,
        fields: Any,
        timer: asyncio.Timeout | None = None,
        trace: dict[str, str] | None = None,
    ) -> Any:
        """Call the registered function at ``where`` in a child; raises ``ChildLost`` if it dies.

        Cancelling the caller (timeout, cancel request, lost lease) kills the child. ``timer``,
        the caller's timeout, stops while the call waits for a free child, or for a new one to
        start (and run the app's set-up). ``trace``: the W3C trace context the child makes
        current around the call (``None``: the child imports no OpenTelemetry).
        """
        await self._turn(timer)
        try:
            slot = await self._take(timer, fields[0])
            try:
                result = await slot.call((where, args, kwargs, fields, trace))
            except ChildLost:
                await self._lost(slot, fields[0])
                raise
            except asyncio.CancelledError:
                self.recycled += 1
                slot.kill()
                raise
            except BaseException:  # the task's own error: the child answered
                self._release(slot, fields[0])
                raise
            self._release(slot, fields[0])
            return result
        finally:
            self._free.release()

    async def _lost(self, slot: _Slot, job_id: int, starting: bool = False) -> bool:
        """Reap a child that ended before it answered, and log how it ended; whether it
        refused its start (REFUSED_EXIT while ``starting``: a task's own exit with that
        status, later, is a lost worker like any other)."""
        self.recycled += 1
        written = await slot.status_written()
        gone = slot.forkserver_gone()  # before the reaping reads what is left of it
        await _reaped(slot.kill())
        unknown = "its forkserver is gone" if gone else None
        # Written later, the status reads as written; a forkserver slow to die that ended
        # meanwhile left 255 (or nothing yet, still stopped), which no child said.
        if not written and slot.process.exitcode in (None, 255):
            unknown = f"its forkserver wrote none within {_STATUS_WAIT:g} s"
        refused = starting and unknown is None and slot.process.exitcode == REFUSED_EXIT
        _report_lost(slot.process, job_id, unknown, refused)
        return refused

    def _release(self, slot: _Slot, job_id: int) -> None:
        """Give a child that answered back to the idle ones, or retire it once it has answered
        ``max_tasks_per_child`` calls (``job_id``'s the last): the next call starts a new one.
        One whose set-up failed is retired after one call: a new one tries the set-up again
        (a transient failure, a download, must not fail that child's jobs while it lives)."""
        if slot.unready:
            slot.retire()
        elif self._max_calls is not None and slot.calls >= self._max_calls:
            self.retired += 1
            slot.retire()
            log.info(
                "job %s: its child process %s has run %s jobs (max_tasks_per_child); it is"
                " retired, and the next job starts a new one", job_id, slot.process.pid,
                slot.calls,
                extra={"action": "child_retired", "job_id": job_id, "pid": slot.process.pid,
                       "jobs": slot.calls},
            )  # fmt: skip
        else:
            self._idle.append(slot)

    async def _turn(self, timer: asyncio.Timeout | None) -> None:
        """Wait until a child is free for one more call. ``timer`` does not run meanwhile: a
        job claimed while every child is busy timed out without having run."""
        if timer is None or not self._free.locked():
            await self._free.acquire()
            return
        with _paused(timer):
            await self._free.acquire()

    async def _take(self, timer: asyncio.Timeout | None, job_id: int) -> _Slot:
        """An idle child, or a new one: an idle child that died meanwhile (the OOM killer, an
        operator) is replaced, or the job handed to it would fail as a lost worker."""
        while self._idle:
            slot = self._idle.pop()
            if slot.process.is_alive():
                return slot
            slot.kill()  # closes its pipe; reaps it
        with _paused(timer):  # a child's start, and the app's set-up in it, are not the job's
            return await self._start(job_id)

    async def _start(self, job_id: int) -> _Slot:
        """A new child for ``job_id``'s call, once it is ready for it."""
        # Starting a child (and the first time, the forkserver) blocks: keep it off the loop.
        slot = await asyncio.to_thread(_Slot, self._context, self._setups)
        try:
            async with asyncio.timeout(self._start_timeout):
                await slot.ready()
        except TimeoutError:  # its set-up hangs: the caller's timeout, stopped, cannot end it
            self.recycled += 1
            await _reaped(slot.kill())
            log.warning(
                "job %s: its new child process %s was not ready within %s s (the app's process"
                " set-up in it did not return); it was killed, and the attempt fails",
                job_id, slot.process.pid, self._start_timeout,
                extra={"action": "child_start_timeout", "job_id": job_id,
                       "pid": slot.process.pid, "timeout": self._start_timeout},
            )  # fmt: skip
            raise ChildStartTimeout(
                f"its child process was not ready within {self._start_timeout} s (the app's"
                " process set-up in it did not return); it was killed"
            ) from None
        except (EOFError, OSError):  # its set-up took the process down, or its start did
            if await self._lost(slot, job_id, starting=True):
                raise ChildRefused() from None
            raise ChildLost() from None
        except BaseException:
            slot.kill()
            raise
        return slot

    def shutdown(self) -> None:
        """Kill every idle child (busy ones are killed when their callers are cancelled)."""
        for slot in self._idle:
            slot.kill()
        self._idle.clear()


def _report_lost(
    process: BaseProcess, job_id: int, unknown: str | None = None, refused: bool = False
) -> None:
    """Log how the child that ran ``job_id`` ended: the job's error says only "worker lost"
    (or, ``refused``, ChildRefused's message). ``unknown`` says why its status is unknown."""
    code = None if unknown else process.exitcode
    how = f"exited with status {code}"
    if unknown:  # multiprocessing says 255, whatever it was: a signal, most often
        how = f"ended, its exit status unknown ({unknown})"
    elif refused:
        how += (
            ", refusing to run the worker that the main script, run again in it, started (no"
            ' `if __name__ == "__main__":` guard)'
        )
    elif code is not None and code < 0:
        with contextlib.suppress(ValueError):  # a number the signal module has no name for
            how = f"was killed by {signal.Signals(-code).name}"
    log.warning(
        "job %s: its child process %s %s before it answered; the attempt ends as %s",
        job_id, process.pid, how, "ChildRefused" if refused else "worker lost",
        extra={"action": "child_lost", "job_id": job_id, "pid": process.pid, "exit_code": code},
    )  # fmt: skip


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Block GROUP_SIGNALS in this thread while it starts a child, which inherits the mask
    (the forkserver does too, started with the worker's first child, and its children from
    it), so that a group's Ctrl-C or SIGTERM waits in the child until it has set its handlers.
    The start runs the main script again first (the forkserver's, once): a signal then killed
    the forkserver or the child, and the job failed as worker lost in the graceful stop that
    should have let it run. This thread only: the worker's own signals reach it meanwhile.

    multiprocessing's resource tracker is started first: the start that starts it (the
    worker's first) unblocks these signals in its thread after spawning it (bpo-33613, the
    same guard for the tracker), and would let the forkserver start without it."""
    resource_tracker.ensure_running()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def _paused(timer: asyncio.Timeout | None) -> Iterator[None]:
    """Stop ``timer`` (if it runs) until the block ends; it then has the time it had left."""
    when = timer.when() if timer is not None and not timer.expired() else None
    if timer is None or when is None:
        yield
        return
    loop = asyncio.get_running_loop()
    left = when - loop.time()
    timer.reschedule(None)
    try:
        yield
    finally:  # cancelled too: a middleware's own timeout may go on to call again
        timer.reschedule(loop.time() + left)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reap(process: BaseProcess, grace: float | None = None) -> asyncio.Future[None] | None:
    """Join ``process`` (killed if it outlives ``grace`` seconds) in a thread of its own while
    an event loop runs: even a killed process takes a while to end (a core dump, a disk
    write), and a retired one up to its grace. Not in the loop's default executor: retired
    children that would not exit took its few threads, and the next child's start (and
    psycopg's DNS look-ups) waited behind them."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _join(process, grace)
        return None
    reaped: asyncio.Future[None] = loop.create_future()

    def reap() -> None:
        try:
            _join(process, grace)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop has closed: no one waits
                loop.call_soon_threadsafe(_resolve, reaped, None)

    threading.Thread(target=reap, daemon=True, name="pgqueue-reaper").start()
    return reaped


async def _reaped(reaping: asyncio.Future[None] | None) -> None:
    """Wait until a process ``_reap`` joins has been joined."""
    if reaping is not None:
        await asyncio.wait([reaping])


def _join(process: BaseProcess, grace: float | None) -> None:
    if grace is not None:
        process.join(grace)
        if process.exitcode is None:
            with contextlib.suppress(OSError):
                process.kill()
    process.join(timeout=5)


def _read(answer: bytes | bytearray) -> Any:
    """The value a child returned, or raise what it raised. A value it pickled that cannot be
    unpickled here is a ``ResultUnread``: the task ran to its end (an error is a RemoteError)."""
    try:
        value = pickle.loads(memoryview(answer)[1:])
    except Exception as exc:
        text = f"{type(exc).__name__}: {exception_text(exc, None)}"  # redacted, then cut
        raise (ResultUnread if answer[:1] == _RETURNED else RemoteError)(text) from exc
    if answer[:1] == _RETURNED:
        return value
    raise value
