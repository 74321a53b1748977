"""The child side of the process pool: what runs in each child process.

A child sets itself up (the app's set-up, then the worker's logging), says it is ready, then
serves calls until its pipe closes: each answer is one flag byte and a pickle (see
``_answer``), which the parent reads with ``_procpool._read``. The parent keeps the pool
(``_procpool``); nothing here imports ``multiprocessing``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import io
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from contextlib import AbstractContextManager, ExitStack, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pgqueue._errors import TEXT_LIMIT, ConfigurationError, ResultUnsent, clipped, exception_text
from pgqueue._hooks import ProcessWrap
from pgqueue._logging import configure_logging
from pgqueue._worker._context import JobContext, _current
from pgqueue._worker._liveness import is_dead

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

log = logging.getLogger("pgqueue.worker")

_WATCH_INTERVAL = 0.25  # seconds between a child's checks that its worker still lives
# The most characters of a text a child sends of an error: four times what the worker stores,
# so that the worker's cut, made after the app's redact, still falls inside what was sent.
_SENT_LIMIT = 4 * TEXT_LIMIT


# The (module, name) of each function a child calls first, in order: Django's set-up, then the
# app's process_setup. Each returns None, or a function making the context manager each call
# of a task runs in (the first one's outermost).
Setups = tuple[tuple[str, str], ...]


class RemoteError(Exception):
    """An exception raised in a child that could not be sent back as itself."""


# An answer is one flag byte, then the value pickled apart from it: a value the parent cannot
# unpickle is still known to be a task's return value, not an error.
_RETURNED, _RAISED = b"r", b"e"
_READY = b"ready"  # a new child's first message: its set-up is done
_UNREADY = b"set-up failed"  # or this: it failed, and the child is retired after one job


# The signals a Ctrl-C in a terminal or a supervisor's stop sends the worker's whole process
# group. The pool starts each child with them blocked (see _procpool.held_signals), and the
# child unblocks them once it ignores them: its start runs the main script again before any
# code of ours (for seconds, a script of slow imports), and one of them then ended it.
GROUP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        if text is None:  # a long message's traceback holds it whole: the worker keeps its ends
            text = clipped("".join(traceback.format_exception(exc)), _SENT_LIMIT)
        self.text = text

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
        text = exception_text(exc, _SENT_LIMIT)
        error = RemoteError(f"{type(exc).__qualname__}: {text} {note}")
        return _Raised(error, raised.text)
    return raised


def _answer(returned: bool, value: Any) -> bytes:
    """A child's answer: its flag, then ``value`` pickled; an unsent value if pickle refuses
    it (an error already checked by ``_sendable`` cannot be refused). Its bytes, which the
    BytesIO hands over uncopied; not a view of them (getbuffer): one caught in a reference
    cycle (a traceback's frame) crashed Python 3.12's garbage collector (cpython#111049)."""
    out = io.BytesIO()
    out.write(_RETURNED if returned else _RAISED)
    try:
        pickle.dump(value, out, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        unsent = ResultUnsent if returned else RemoteError
        out = io.BytesIO(_RAISED)
        out.seek(1)
        pickle.dump(unsent(f"{type(exc).__name__}: {exception_text(exc, _SENT_LIMIT)}"), out)
    return out.getvalue()


def _child_main(
    conn: Connection,
    worker_pid: int,
    worker_started: int | None,
    setups: Setups = (),
    logs: tuple[str, str] | None = None,
) -> None:
    """A child's life (see ``_serve``). An error that ends it is logged as the worker logs:
    multiprocessing would print it as text, a traceback amid JSON lines."""
    try:
        _serve(conn, worker_pid, worker_started, setups, logs)
    except BaseException:
        log.error(
            "child process %s: its loop failed; it exits", os.getpid(), exc_info=True,
            extra={"action": "child_failed", "pid": os.getpid()},
        )  # fmt: skip
        raise SystemExit(1) from None


def _serve(
    conn: Connection,
    worker_pid: int,
    worker_started: int | None,
    setups: Setups,
    logs: tuple[str, str] | None,
) -> None:
    """The child's loop: receive a call, run it, send back its answer. ``logs``: the
    ``configure_logging`` arguments of the worker's process, if it was set up so (the CLI):
    the child's records and warnings are then written as the worker's are, JSON lines too."""
    # The worker ends its children itself (SIGKILL). A Ctrl-C in a terminal, or a SIGTERM from
    # a supervisor, reaches the whole process group: it must not end the call the worker's
    # graceful stop lets finish. A handler, not SIG_IGN: the task's own subprocesses get the
    # default action back at exec. Held since the child's start (see GROUP_SIGNALS), they are
    # let through once handled.
    for signum in GROUP_SIGNALS:
        signal.signal(signum, _ignore)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
    if logs is not None:  # now too: an error in the watch, or in the set-up's time, is a record
        configure_logging(*logs)
    threading.Thread(
        target=_watch_worker, args=(worker_pid, worker_started), daemon=True,
        name="pgqueue-worker-watch",
    ).start()  # fmt: skip
    wraps, failed = _set_up(setups)
    if logs is not None:  # again after the setup, as in the worker (Django's before the CLI's)
        configure_logging(*logs)
    failed_setup = None if failed is None else _failed_setup(*failed)
    setup_trace = None if failed_setup is None else failed_setup.__traceback__
    conn.send_bytes(_READY if failed_setup is None else _UNREADY)
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:  # the worker closed the pipe: this child is retired
            return
        try:
            call = pickle.loads(message)
        except Exception as exc:  # a class only the worker imports: the call's error
            conn.send_bytes(_answer(False, _sendable(_unread(exc))))
            continue
        where, args, kwargs, fields, trace = call  # anything else is no call: this child fails
        if _gone(worker_pid, worker_started):
            # Sent before the worker died, read since (by a child still starting, say): its
            # job is rescued and runs again elsewhere. The watch would end this copy only at
            # its next look, after it had run for up to _WATCH_INTERVAL.
            return
        try:
            if failed_setup is not None:  # its own traceback, not one frame more per call
                raise failed_setup.with_traceback(setup_trace)
            answer = _answer(True, _run(where, args, kwargs, fields, trace, wraps))
        except BaseException as exc:  # a task's SystemExit must not end the child silently
            answer = _answer(False, _sendable(exc))
        conn.send_bytes(answer)


def _set_up(setups: Setups) -> tuple[list[ProcessWrap], tuple[BaseException, str] | None]:
    """Call each set-up in turn: the wraps they returned, and the error of the first that
    raised (or returned neither None nor a function), with its name."""
    wraps: list[ProcessWrap] = []
    for module, name in setups:
        try:
            wrap = getattr(importlib.import_module(module), name)()
            if wrap is not None and not callable(wrap):
                raise TypeError(
                    f"the process set-up {module}.{name} returned {wrap!r}: it must return"
                    " None or a function making a context manager"
                )
        except BaseException as exc:
            return wraps, (exc, f"{module}.{name}")
        if wrap is not None:
            wraps.append(wrap)
    return wraps, None


def _failed_setup(exc: BaseException, where: str) -> BaseException:
    """``exc``, which every call of this child then fails with, as the job's error, logged
    once for the child (not per job), once the worker's logging is set up here again."""
    log.error(
        "child process %s: its set-up %s failed: its job fails with this, and it is retired",
        os.getpid(), where, exc_info=exc,
        extra={"action": "child_setup_failed", "pid": os.getpid(), "setup": where},
    )  # fmt: skip
    return exc


def _wrapped(wraps: list[ProcessWrap]) -> AbstractContextManager[object]:
    """The context managers the set-ups' ``wraps`` make, entered in order, around one call."""
    if not wraps:
        return nullcontext()
    stack = ExitStack()
    with stack:  # one that raises in entering exits those already entered
        for wrap in wraps:
            stack.enter_context(wrap())
        return stack.pop_all()


def _run(
    where: tuple[str, str],
    args: Any,
    kwargs: Any,
    fields: Any,
    trace: dict[str, str] | None,
    wraps: list[ProcessWrap],
) -> Any:
    """The call's value, made in the attempt's span and the set-ups' context managers."""
    with _traced(trace), _wrapped(wraps):
        return _call(where, args, kwargs, fields)
    # Reached only if a context manager's exit swallowed the task's error: the task returned
    # nothing, and its job must not succeed (nor the child answer anything else).
    raise RuntimeError(
        "the task raised, and a context manager of the process set-up suppressed its error"
        " (its __exit__ returned true): it must let the task's errors through"
    )


def _unread(exc: Exception) -> RemoteError:
    """The error of a call whose arguments this child cannot unpickle, caused by ``exc``."""
    text = exception_text(exc, _SENT_LIMIT)
    error = RemoteError(
        f"the call could not be read in its child process: {type(exc).__name__}: {text}"
    )
    error.__cause__ = exc
    return error


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


def _call(where: tuple[str, str], args: Any, kwargs: Any, fields: Any) -> Any:
    """Import the registered task's module and call its function with a job context."""
    module, qualname = where
    fn = lookup(importlib.import_module(module), qualname)
    if fn is None:
        raise LookupError(f"{module}.{qualname} not found in the child process")
    _current.set(JobContext(*fields))
    result = fn(*args, **kwargs)
    if inspect.iscoroutine(result):  # an async task isolated after a crash
        return asyncio.run(result)  # its task copies the context set above
    return result


def _traced(carrier: dict[str, str] | None) -> AbstractContextManager[object]:
    """The worker's span of the attempt, made current around its call (``carrier``, W3C
    headers, says which), so that the task's spans are its children; nothing if the worker
    sent none (an app not instrumented: OpenTelemetry is not imported) or if this child
    cannot import OpenTelemetry."""
    if not carrier:
        return nullcontext()
    try:
        from pgqueue.tracing import _attached
    except ImportError:
        return nullcontext()
    return _attached(carrier)


def lookup(module: Any, qualname: str) -> Any:
    """The function at ``qualname`` in ``module`` (unwrapping the Task a module attribute
    holds), or ``None``: how a child finds a task, and how the worker checks that it will."""
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return getattr(target, "fn", target)


# The exit status of a child whose start refuse_in_a_child_start ended (EX_CONFIG): the
# worker tells its job why, where it could only say "worker lost".
REFUSED_EXIT = 78


def refuse_in_a_child_start() -> None:
    """Raise ``ConfigurationError`` if this process is a child still being started: a script
    without an ``if __name__ == "__main__":`` guard, run again in it, is starting a worker.

    spawn and forkserver run the main script again in every child (as ``__mp_main__``)
    before the child's own code: unguarded, the script's worker ran there, claiming and
    running jobs of its own while the pool waited for the child to be ready. Ended here, the
    child dies at once, this error on its stderr, with the status REFUSED_EXIT (see
    ``_exit_refused``), by which the worker names the cause in its job's error."""
    process = sys.modules.get("multiprocessing.process")  # not imported: no child at all
    if process is not None and getattr(process.current_process(), "_inheriting", False):
        error = ConfigurationError(
            "a worker was started in a process-pool child while it re-ran the main script"
            " (multiprocessing's spawn and forkserver run it again in every child): start the"
            ' worker under `if __name__ == "__main__":` in that script'
        )
        sys.excepthook = functools.partial(_exit_refused, error, sys.excepthook)
        raise error


def _exit_refused(
    error: BaseException,
    previous: Any,
    kind: type[BaseException],
    value: BaseException,
    tb: TracebackType | None,
) -> None:
    """The excepthook of a child whose start was refused: ``error``, uncaught, is printed
    as ``previous`` prints it, and the child exits with REFUSED_EXIT. multiprocessing gives
    no other way: its forkserver child passes any error to the excepthook, then exits 1."""
    previous(kind, value, tb)
    if value is error:
        sys.stderr.flush()
        os._exit(REFUSED_EXIT)
