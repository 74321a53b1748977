"""Runs one claimed job and turns what happened into an :class:`~pgqueue._store.Outcome`."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import EllipsisType
from typing import TYPE_CHECKING, Any

from pgqueue import _json
from pgqueue._errors import (
    Cancel,
    NotText,
    ResultUnsent,
    Retry,
    UnknownTaskError,
    clipped_through,
    exception_text,
    leaves,
)
from pgqueue._hooks import call_through
from pgqueue._retry import RetryPolicy, check_delay, unknown_task_delay
from pgqueue._store import Outcome
from pgqueue._worker._config import CHILD_START_TIMEOUT
from pgqueue._worker._context import JobContext, _current
from pgqueue._worker._eager import never_suspends

if TYPE_CHECKING:
    from pgqueue._app import PgQueue
    from pgqueue._task import Task
    from pgqueue._worker._procpool import ProcessPool

log = logging.getLogger("pgqueue.worker")

WITHHELD = "[withheld: the app's redact function "  # how a text redact failed on begins
DEFAULT_RETRY = RetryPolicy()  # when a task's own policy fails

_WENT_ON = "the task went on after its timeout cancelled it, and returned"

# Seconds an attempt stopped (its timeout, a cancel request, a lost lease) may run on, its
# cancellation ignored, before the worker logs it (job_overran): a coroutine that swallows
# its CancelledError, or a thread, which cannot be interrupted, runs on unseen otherwise.
OVERRUN_GRACE = 5.0

# The running attempt's timeout, if it has one: stopped while a process task waits for a child.
_timer: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "pgqueue_job_timer", default=None
)


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 7x more to build, per job
class ClaimedJob:
    """A row this worker holds the lease for, as the claim returned it (treat as read-only)."""

    id: int
    queue: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout: float | None
    meta: dict[str, Any]
    waited: float = 0.0  # seconds between becoming runnable (run_at) and this claim
    crashed: bool = False  # the previous attempt ended with its worker lost
    unreadable: str | None = None  # why the row's JSON could not be decoded: the job fails

    def context(self) -> JobContext:
        """A fresh context for running this attempt."""
        return JobContext(
            self.id, self.task, self.queue, self.attempt, self.max_attempts, self.meta
        )


class WorkerLost(Exception):
    """The process running the job died."""

    def __str__(self) -> str:
        return "worker lost"


class JobExecutor:
    """Calls tasks: coroutines on the loop, functions in threads, CPU work in processes."""

    def __init__(
        self,
        app: PgQueue,
        threads: int,
        processes: int,
        isolate_crashed: bool = True,
        max_tasks_per_child: int | None = None,
        child_start_timeout: float = CHILD_START_TIMEOUT,
    ) -> None:
        self.app = app
        self.isolate_crashed = isolate_crashed
        self._threads = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="pgqueue-task")
        self._process_count = max(processes, 1)
        self._max_tasks_per_child = max_tasks_per_child
        self._child_start_timeout = child_start_timeout
        self._processes: ProcessPool | None = None
        # What a child calls before the app's set-ups (the metrics' marker of its pid).
        self.child_setups: tuple[tuple[str, str], ...] = ()
        # Thread tasks that were given up on (timeout, cancel) but whose thread still runs.
        self._stragglers: dict[tuple[int, int], Future[Any]] = {}
        self._inline_tasks: dict[Task[Any, Any], bool] = {}  # runs_inline() per task
        self._plain_tasks: dict[Task[Any, Any], bool] = {}  # _plain() per task, crash aside

    def runs_inline(
        self, job: ClaimedJob, task: Task[Any, Any] | EllipsisType | None = ...
    ) -> bool:
        """Whether :meth:`run` would finish ``job`` without ever suspending: a coroutine
        function with no ``await`` in it, run on the loop, with no timeout and no middleware.
        ``task``: the job's task, when the caller has already looked it up."""
        if job.timeout is not None or job.crashed or job.unreadable or self.app.hooks.middleware:
            return False
        if task is ...:  # the app's get_task may be costly (Django's)
            task = self.app.get_task(job.task)
        if task is None:
            return False
        inline = self._inline_tasks.get(task)
        if inline is None:
            inline = self._inline_tasks[task] = _on_loop(task) and never_suspends(task.fn)
        return inline

    async def run(
        self, job: ClaimedJob, ctx: JobContext, task: Task[Any, Any] | EllipsisType | None = ...
    ) -> Outcome:
        """Run ``job``; every exception becomes an outcome (``CancelledError`` propagates).
        ``task``: the job's task, when the caller has already looked it up."""
        if job.unreadable is not None:  # no attempt can read it: fail now, arguments kept
            return Outcome(job.id, job.attempt, "failed", error=job.unreadable)
        if task is ...:
            task = self.app.get_task(job.task)
        timer = None
        try:
            if task is None:
                raise UnknownTaskError(job.task)
            middleware = self.app.hooks.middleware
            if middleware:
                pending = call_through(middleware, ctx, lambda: self._call(task, job, ctx))
            elif job.timeout is None and self._plain(task, job):
                pending = None
            else:
                pending = self._call(task, job, ctx)
            if pending is None:  # most jobs: the task's coroutine awaited here, one layer less
                running = _current.set(ctx)
                try:
                    result = await task.fn(*job.args, **job.kwargs)  # type: ignore[misc]
                finally:
                    _current.reset(running)
            elif job.timeout is None:  # no timeout machinery at all
                result = await pending
            else:
                async with (timer := asyncio.timeout(job.timeout)):
                    token = _timer.set(timer)  # a process task's wait for a child stops it
                    try:
                        result = await pending
                    finally:  # a context holding it would hold the task it cancels: a cycle
                        _timer.reset(token)
                if timer.expired():  # the task caught the timeout's CancelledError, and returned
                    raise TimeoutError(_WENT_ON)
        except ResultUnsent as exc:  # a process task's: its work is done, as for _success
            if task is not None and not task.options.store_result:
                return Outcome(job.id, job.attempt, "succeeded")
            return self._done_unstored(job, exc, exc.why)
        except asyncio.CancelledError as exc:
            if ctx.cancel_reason is not None or _being_cancelled():
                raise  # the worker's own cancellation: the worker decides what follows
            return self._failure(job, task, exc)  # raised by the task itself (a future it awaited)
        except BaseException as exc:  # a task's SystemExit must not stop the worker
            # Only the expired timer says the attempt timed out: a TimeoutError may be the
            # task's own (a socket's), and what a task raised once cancelled may be another,
            # even a Retry or a Cancel.
            if timer is not None and timer.expired():
                return self._timed_out(job, task, ctx, exc)
            if ctx.cancel_reason is not None:
                # The worker stopped it (a cancel request, its shutdown, a lost lease), and this
                # is what the task made of the CancelledError: a TaskGroup raises its tasks'
                # errors in its place (one failed as it was cancelled), a task may raise Cancel.
                # It ends as the stop says. Not _being_cancelled(): on 3.11 a TaskGroup whose
                # task failed after its body leaves the count up, with no worker's cancellation.
                raise asyncio.CancelledError() from exc
            if isinstance(exc, Retry | Cancel):
                return self._decided(job, exc)
            if isinstance(exc, BaseExceptionGroup):  # a TaskGroup's: it may hold Retry, Cancel
                return self._grouped(job, task, exc)
            return self._failure(job, task, exc)
        if not task.options.store_result:
            return Outcome(job.id, job.attempt, "succeeded")
        return self._success(job, result)

    def _plain(self, task: Task[Any, Any], job: ClaimedJob) -> bool:
        """Whether ``job`` runs as its task's coroutine on the loop, as :meth:`_call` would run
        it: not in a process, nor isolated after a crash."""
        plain = self._plain_tasks.get(task)
        if plain is None:
            plain = self._plain_tasks[task] = task.options.executor != "process" and _on_loop(task)
        return plain and not job.crashed

    def _decided(self, job: ClaimedJob, exc: Retry | Cancel) -> Outcome:
        """The outcome the task asked for, raising ``exc``."""
        if isinstance(exc, Retry):
            return Outcome(job.id, job.attempt, "queued", delay=exc.delay)
        error = self._redact(f"cancelled: {exception_text(exc, None)}", job.id)
        return Outcome(job.id, job.attempt, "cancelled", error=error)

    def _success(self, job: ClaimedJob, result: Any) -> Outcome:
        try:
            return Outcome(job.id, job.attempt, "succeeded", result=_json.dumps(result))
        except TypeError as exc:
            return self._done_unstored(job, exc, "is not JSON-serialisable")

    def _done_unstored(self, job: ClaimedJob, exc: BaseException, why: str) -> Outcome:
        """The job failed for good: its work is done, but its return value cannot be stored
        (``why``); running it again would repeat its side effects for nothing."""
        error = self._redact(f"the return value {why}: {exception_text(exc, None)}", job.id)
        tb = self._redact("".join(traceback.format_exception(exc)), job.id)
        return Outcome(job.id, job.attempt, "failed", error=error, traceback=tb)

    def _grouped(
        self, job: ClaimedJob, task: Task[Any, Any] | None, group: BaseExceptionGroup[Any]
    ) -> Outcome:
        """What a task's exception group (an ``asyncio.TaskGroup``'s) asks for. A Cancel in it
        cancels the job: it said not to run it again, and the other exceptions raised beside
        it (often its siblings', as they were stopped) stay in the traceback. Else one error in
        it makes it a failure. Else, all Retry, it is a retry, after the longest delay asked
        for: each part that asked waits at least that long."""
        cancels, others = group.split(Cancel)
        if cancels is not None:
            error = "cancelled: " + "; ".join(exception_text(c, None) for c in leaves(cancels))
            tb = None
            if others is not None:
                error += f" (and {sum(1 for _ in leaves(others))} other exceptions)"
                tb = self._redact("".join(traceback.format_exception(group)), job.id)
            error = self._redact(error, job.id)
            return Outcome(job.id, job.attempt, "cancelled", error=error, traceback=tb)
        retries, errors = group.split(Retry)
        if errors is not None or retries is None:
            return self._failure(job, task, group)
        delay = max(r.delay for r in leaves(retries) if isinstance(r, Retry))
        return Outcome(job.id, job.attempt, "queued", delay=delay)

    def _timed_out(
        self, job: ClaimedJob, task: Task[Any, Any] | None, ctx: JobContext, exc: BaseException
    ) -> Outcome:
        """The attempt outlived its timeout: a failure, whatever it ended with (the timeout's
        TimeoutError, or what the task made of the cancellation: another error, even a Retry,
        which gives its attempt back, or a Cancel, which ends the job without its retries)."""
        ctx.cancel("timeout")
        return self._failure(job, task, exc, f"timed out after {job.timeout} s")

    def _failure(
        self, job: ClaimedJob, task: Task[Any, Any] | None, exc: BaseException, why: str = ""
    ) -> Outcome:
        error = self._redact(why or describe(exc), job.id)
        tb = self._redact("".join(traceback.format_exception(exc)), job.id)
        if job.attempt >= job.max_attempts:
            return Outcome(job.id, job.attempt, "failed", error=error, traceback=tb)
        policy = (task.options if task else self.app.defaults).retry
        try:
            delay = check_delay(policy.delay(job.attempt), "the retry policy's delay")
        except Exception:  # a RetryPolicy subclass: the job still needs its retry
            log.exception(
                "job %s: its retry policy raised or gave no usable delay; using the default",
                job.id, extra={"action": "retry_policy_error", "job_id": job.id},
            )  # fmt: skip
            delay = DEFAULT_RETRY.delay(job.attempt)
        if isinstance(exc, UnknownTaskError):  # a deploy may be rolling out: give it time
            delay = unknown_task_delay(delay, self.app.unknown_task_delay)
        return Outcome(job.id, job.attempt, "queued", error=error, traceback=tb, delay=delay)

    def _redact(self, text: str, job_id: int) -> str:
        return redacted(self.app.redact, text, job_id)

    async def _call(self, task: Task[Any, Any], job: ClaimedJob, ctx: JobContext) -> Any:
        assert task.fn is not None
        executor = task.options.executor
        if executor == "process" or (job.crashed and self._isolate(task, job)):
            return await self._in_process(task, job, ctx)
        if _on_loop(task):
            token = _current.set(ctx)
            try:
                return await task.fn(*job.args, **job.kwargs)
            finally:
                _current.reset(token)
        return await self._in_thread(task, job, ctx)

    def _isolate(self, task: Task[Any, Any], job: ClaimedJob) -> bool:
        """Whether this attempt of a job whose last attempt took its worker down runs in a child
        process: a job that kills the process running it then takes down a child, not the
        worker and every other job on it. Needs a task a child can import by name."""
        if not self.isolate_crashed or not _importable(task):
            return False
        log.info(
            "job %s: its last attempt lost its worker; running attempt %s in a child process",
            job.id, job.attempt,
            extra={"action": "job_isolated", "job_id": job.id, "attempt": job.attempt},
        )  # fmt: skip
        return True

    async def _in_thread(self, task: Task[Any, Any], job: ClaimedJob, ctx: JobContext) -> Any:
        ctx.cancelled  # noqa: B018 - create the event here, on the loop, before the thread sees ctx
        context = contextvars.copy_context()
        context.run(_current.set, ctx)
        running = self._threads.submit(_bind(context, task.fn, job.args, job.kwargs))
        try:
            return await asyncio.wrap_future(running)
        except asyncio.CancelledError:
            # A thread cannot be interrupted: tell the task, and keep its slot taken until
            # the thread really ends (see settle()).
            ctx.cancelled.set()  # the reason (timeout, cancel, ...) is recorded by the canceller
            if not running.done():
                self._stragglers[(job.id, job.attempt)] = running
            raise

    def settling(
        self, job: ClaimedJob, ctx: JobContext, started: float
    ) -> Coroutine[Any, Any, None] | None:
        """What waits until a thread task given up on has really returned, or ``None`` for the
        rest (most jobs: no coroutine to make and await per job); one still running
        OVERRUN_GRACE seconds later is logged (``job_overran``).

        What the thread returns or raises belongs to an attempt already over: it is dropped,
        never raised there (a late SystemExit would end the worker's event loop)."""
        running = self._stragglers.pop((job.id, job.attempt), None)
        return None if running is None else _settle(running, job, ctx, started)

    async def _in_process(self, task: Task[Any, Any], job: ClaimedJob, ctx: JobContext) -> Any:
        # The process pool (and multiprocessing with it) is imported when a job first needs it:
        # most workers never do, and it is several milliseconds of every worker's start.
        from pgqueue._worker._procpool import (
            ChildLost,
            ChildRefused,
            ChildStartTimeout,
            ProcessPool,
        )

        assert task.fn is not None
        if self._processes is None:
            self._processes = ProcessPool(
                self._process_count,
                (*self.child_setups, *self.app._process_setups()),
                self._max_tasks_per_child,
                self._child_start_timeout,
            )
        where = (task.fn.__module__, task.fn.__qualname__)
        fields = (job.id, job.task, job.queue, job.attempt, job.max_attempts, job.meta)
        carry = self.app.hooks.child_trace
        trace = None if carry is None else carry()  # the attempt's span, if traced
        try:
            return await self._processes.run(
                where, job.args, job.kwargs, fields, _timer.get(), trace
            )
        except ChildLost:
            raise WorkerLost() from None
        except (ChildStartTimeout, ChildRefused) as exc:
            if task.options.executor == "process":
                raise
            # Isolated after a crash, it has still not run apart from the worker: it ends as
            # "worker lost" again (the child's failed start its cause), so its next attempt is too.
            raise WorkerLost() from exc

    def shutdown(self) -> None:
        """Stop accepting work; running threads are abandoned, child processes killed."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown()


def overran(job: ClaimedJob, reason: str | None, ran: float, what: str) -> None:
    """Log that ``what`` (the task's coroutine, or its thread) runs on OVERRUN_GRACE seconds
    after its attempt was stopped for ``reason``, having run ``ran`` seconds."""
    log.warning(
        "job %s (%s) attempt %s: %s still runs %s s or more after it was stopped (%s; timeout"
        " %s s), having run %.1f s: it ignores its cancellation, and holds its slot until it"
        " returns",
        job.id, job.task, job.attempt, what, OVERRUN_GRACE, reason, job.timeout, ran,
        extra={"action": "job_overran", "job_id": job.id, "attempt": job.attempt,
               "task": job.task, "timeout": job.timeout, "reason": reason,
               "running_s": round(ran, 1)},
    )  # fmt: skip


def _on_loop(task: Task[Any, Any]) -> bool:
    """Whether ``task`` runs as a coroutine on the worker's event loop."""
    executor = task.options.executor
    return executor == "async" or (executor == "auto" and task.is_async)


def stopped_by(ctx: JobContext) -> str | None:
    """Why the worker stops the attempt running in this asyncio task (``ctx``'s), if it does:
    ``timeout`` once its timer expired, else the reason it was cancelled for."""
    timer = _timer.get()
    if timer is not None and timer.expired():
        return "timeout"
    if ctx.cancel_reason is not None or _being_cancelled():
        return ctx.cancel_reason or "cancelled"
    return None


def _being_cancelled() -> bool:
    """Whether the running asyncio task has been asked to cancel (and not uncancelled)."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


async def _settle(running: Future[Any], job: ClaimedJob, ctx: JobContext, started: float) -> None:
    ended = asyncio.wrap_future(running)
    ended.add_done_callback(_dropped)
    # Unlike awaiting it, asyncio.wait never raises what it holds.
    if not (await asyncio.wait([ended], timeout=OVERRUN_GRACE))[0]:
        overran(job, ctx.cancel_reason, time.monotonic() - started, "its thread")
        await asyncio.wait([ended])


def _dropped(future: asyncio.Future[Any]) -> None:
    """Mark what ``future`` ended with as seen, so that asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()


def _importable(task: Task[Any, Any]) -> bool:
    """Whether a child process finds ``task`` at its function's module and qualified name."""
    from pgqueue._worker._procchild import lookup

    fn = task.fn
    module = sys.modules.get(fn.__module__) if fn is not None else None
    if fn is None or module is None or module.__name__ == "__main__":
        return False
    # The child finds the function a module attribute holds. A wrapper made with
    # functools.wraps around it (DjangoPgQueue's, around the user's) is found through
    # __wrapped__; so is a user's decorator under @app.task, whose wrapper the child finds.
    target = lookup(module, fn.__qualname__)
    layer: Any = fn
    while layer is not None:
        if layer is target:
            return True
        layer = getattr(layer, "__wrapped__", None)
    return False


def _bind(context: contextvars.Context, fn: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return lambda: context.run(fn, *args, **kwargs)


def redacted(redact: Callable[[str], object], text: str, job_id: int) -> str:
    """``text`` through the app's ``redact``; withheld if that raises or returns no str, so
    that neither the secret nor the job's outcome is lost. A SystemExit or KeyboardInterrupt
    it raises is its failure too, as a task's is: it must not stop the worker. Not every such
    exception is redact's own: with ``install_signal_handlers=False`` inside ``asyncio.run``,
    a second Ctrl-C raises KeyboardInterrupt wherever the loop is, here included, and this
    reads it as redact's failure too (the worker's own handlers leave no signal raising)."""
    try:
        return clipped_through(text, redact)  # a cut never leaves half a secret
    except NotText as exc:
        why = f"returned {exc}, not str"
    except BaseException as exc:
        why = f"raised {type(exc).__qualname__}"
    log.error("job %s: the app's redact function %s; the text is withheld", job_id, why,
              extra={"action": "redact_error", "job_id": job_id})  # fmt: skip
    return f"{WITHHELD}{why}]"


def asks_again(exc: BaseException) -> bool:
    """Whether an attempt raising ``exc`` gives the job back to run again, as the task asked:
    a Retry, or an exception group (an asyncio.TaskGroup's) of nothing else (``_grouped``)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(Retry)[1] is None
    return isinstance(exc, Retry)


def decided(exc: BaseException) -> bool:
    """Whether an attempt raising ``exc`` ends as the task decided, no failure: a Retry or a
    Cancel, or an exception group (an asyncio.TaskGroup's) read as one by ``_grouped``."""
    if isinstance(exc, BaseExceptionGroup) and exc.split(Cancel)[0] is not None:
        return True
    return isinstance(exc, Cancel) or asks_again(exc)


def describe(exc: BaseException) -> str:
    text = exception_text(exc, None)  # whole: redact sees it before the cut
    if isinstance(exc, UnknownTaskError | WorkerLost):
        return text
    return f"{type(exc).__qualname__}: {text}" if text else type(exc).__qualname__
