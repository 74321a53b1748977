"""What a worker tells the world about its jobs: log records, a periodic summary, per-task
callbacks and any listener (metrics) — fed by two calls from the worker's hot path.

The hot path stays cheap: a finished job costs a few attribute reads and one small object;
log records are only formatted when their level is enabled.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pgqueue._errors import LOG_LIMIT, clipped
from pgqueue._hooks import JobEvent
from pgqueue._worker._acker import all_done
from pgqueue._worker._repeat import repeat

if TYPE_CHECKING:
    from pgqueue._store import Outcome
    from pgqueue._task import Task
    from pgqueue._worker import JobContext, Worker
    from pgqueue._worker._executor import ClaimedJob

log = logging.getLogger("pgqueue.worker")

Listener = Callable[[JobEvent], None]
"""Called on the event loop after each attempt; must be quick and must not block."""

_LEVELS = {
    "succeeded": logging.DEBUG,
    "retrying": logging.INFO,
    "cancelled": logging.INFO,
    "failed": logging.ERROR,
}


def _tell(
    listeners: Sequence[Callable[..., None]], args: tuple[Any, ...], kind: str, job_id: int | None
) -> None:
    """Call each of ``listeners`` with ``args``; one that raises is logged, and the others and
    the caller's own work (an attempt's bookkeeping, the maintenance pass) still run."""
    for listener in listeners:
        try:
            listener(*args)
        except Exception:
            log.exception(
                "%s listener %s raised", kind, getattr(listener, "__qualname__", listener),
                extra={"action": "listener_error", "job_id": job_id},
            )  # fmt: skip


class WorkerEvents:
    """A worker's job events: logs them, runs task callbacks, and feeds ``listeners``."""

    def __init__(self, worker: Worker, summary_interval: float = 60.0) -> None:
        self.worker = worker
        self.summary_interval = summary_interval
        self.listeners: list[Listener] = []
        self.start_listeners: list[Callable[[ClaimedJob], None]] = []
        # Told as each attempt stops running, however it ended: finished, or stopped by a lost
        # lease or the shutdown, which finish no event (the metrics' running count).
        self.end_listeners: list[Callable[[ClaimedJob], None]] = []
        # Told how many jobs of lost workers a rescue requeued and ended (the metrics).
        self.rescue_listeners: list[Callable[[int, int], None]] = []
        self.metrics_port: int | None = None
        # Attempts reported finished, counted as the metrics count them: never taken back, so
        # that no summary shows a negative count (worker.stats takes back unwritten outcomes).
        self.counts: Counter[str] = Counter()
        self._callbacks: set[asyncio.Future[Any]] = set()
        self.callback_ended = asyncio.Event()  # set as each callback ends
        # Sync callbacks run in threads of their own, not in the loop's default executor: the
        # loop's close waits for those threads, and one callback that never returns held it.
        self._threads: ThreadPoolExecutor | None = None

    def job_started(self, job: ClaimedJob) -> float:
        """Note that ``job`` starts now; returns the start time to pass to :meth:`job_finished`."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "job %s (%s on %s) started, attempt %s", job.id, job.task, job.queue, job.attempt,
                extra={"action": "job_started", "job_id": job.id, "task": job.task,
                       "queue": job.queue, "attempt": job.attempt},
            )  # fmt: skip
        if self.start_listeners:  # most workers have none: no call per job
            _tell(self.start_listeners, (job,), "start", job.id)
        return time.monotonic()

    def job_left(self, job: ClaimedJob) -> None:
        """Tell the end listeners that an attempt at ``job`` no longer runs."""
        _tell(self.end_listeners, (job,), "end", job.id)

    def jobs_rescued(self, requeued: int, ended: int) -> None:
        """Tell the rescue listeners how many jobs of lost workers a rescue requeued and ended."""
        _tell(self.rescue_listeners, (requeued, ended), "rescue", None)

    def job_finished(
        self, ctx: JobContext, outcome: Outcome, started: float, task: Task[Any, Any] | None
    ) -> None:
        """Report how an attempt ended to the log, the task's callbacks and the listeners;
        ``task`` is the job's task (``None`` if unknown), as the worker looked it up to run it."""
        state = "retrying" if outcome.state == "queued" else outcome.state
        self.counts[counted(outcome)] += 1
        logged = log.isEnabledFor(_LEVELS[state])
        callback = None
        if task is not None:  # looked up once per job, by the worker
            if state == "succeeded":
                callback = task.options.on_success
            elif state == "failed":
                callback = task.options.on_failure
        if not (logged or callback or self.listeners):
            return  # the common case at INFO without metrics: no event object at all
        event = JobEvent(
            ctx, state, time.monotonic() - started, outcome.error, outcome.traceback,
            outcome.result,
        )  # fmt: skip
        for listener in self.listeners:  # before the log line: whoever reads it sees the counts
            try:
                listener(event)
            except Exception:  # the log line, the task's callback and other listeners still run
                log.exception(
                    "event listener %s raised", getattr(listener, "__qualname__", listener),
                    extra={"action": "listener_error", "job_id": event.job.id},
                )  # fmt: skip
        if logged:
            _log_event(event)
        if callback is not None:
            self._schedule(callback, event)

    def job_ended(self, ctx: JobContext, duration: float, outcome: Outcome) -> None:
        """Tell the task's ``job_ended`` hook (see AppHooks) that ``outcome``, written, ended
        its job."""
        hook = self.worker.app.hooks.job_ended.get(ctx.task)
        if hook is not None:
            event = JobEvent(
                ctx, outcome.state, duration, outcome.error, outcome.traceback, outcome.result
            )  # fmt: skip
            self._schedule(hook, event)

    def _schedule(self, fn: Callable[[JobEvent], Any], event: JobEvent) -> None:
        """Run callback ``fn`` off the loop; :meth:`drain` waits for it at shutdown."""
        future = asyncio.ensure_future(self._run_callback(fn, event))
        self._callbacks.add(future)
        future.add_done_callback(self._ended)

    def _ended(self, future: asyncio.Future[Any]) -> None:
        self._callbacks.discard(future)
        self.callback_ended.set()

    @property
    def pending(self) -> int:
        """How many callbacks (``on_success``, ``on_failure``, ``job_ended`` hooks) have not
        ended yet."""
        return len(self._callbacks)

    async def _run_callback(self, fn: Callable[[JobEvent], Any], event: JobEvent) -> None:
        try:
            if inspect.iscoroutinefunction(fn):
                await fn(event)
            else:
                if self._threads is None:
                    self._threads = ThreadPoolExecutor(thread_name_prefix="pgqueue-callback")
                call = functools.partial(contextvars.copy_context().run, fn, event)
                result = await asyncio.get_running_loop().run_in_executor(self._threads, call)
                if inspect.isawaitable(result):  # an object's async __call__, a lambda's call
                    await result
        except (asyncio.CancelledError, GeneratorExit):  # stopped, not the callback's error
            raise
        except BaseException:  # a callback's SystemExit stopped the loop, outcomes unwritten
            log.exception(
                "callback %s of job %s raised", getattr(fn, "__qualname__", fn), event.job.id,
                extra={"action": "callback_error", **_job_fields(event)},
            )  # fmt: skip

    async def drain(self, timeout: float, hurry: asyncio.Event) -> None:
        """Give callbacks still running up to ``timeout`` seconds to finish (at shutdown), or
        until ``hurry`` is set; then say how many did not, and leave their threads, as the
        worker leaves its task threads (those not yet started never run)."""
        await all_done(list(self._callbacks), timeout, hurry)
        if self._callbacks:
            log.warning(
                "%s callbacks (on_success, on_failure, Django's task_finished) had not ended %s s"
                " into shutdown; the worker stops without them", len(self._callbacks), timeout,
                extra={"action": "callbacks_abandoned", "callbacks": len(self._callbacks)},
            )  # fmt: skip
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def summarize(self) -> None:
        """Log one summary line every ``summary_interval`` seconds (a worker service)."""
        last = _totals(self)

        async def one() -> None:
            nonlocal last
            await asyncio.sleep(self.summary_interval)
            now = _totals(self)
            _log_summary(self.worker, {k: now[k] - last[k] for k in now}, self.summary_interval)
            last = now

        await repeat("summary", one, "loop_error")


def _job_fields(event: JobEvent) -> dict[str, Any]:
    job = event.job
    return {
        "job_id": job.id, "task": job.task, "queue": job.queue, "attempt": job.attempt,
        "duration_ms": round(event.duration * 1000, 3),
    }  # fmt: skip


def _log_event(event: JobEvent) -> None:
    fields = _job_fields(event)
    detail = f": {clipped(event.error, LOG_LIMIT)}" if event.error else ""
    log.log(
        _LEVELS[event.state], "job %s (%s on %s) %s: attempt %s/%s ran %.1f ms%s",
        event.job.id, event.job.task, event.job.queue, event.state, event.job.attempt,
        event.job.max_attempts, fields["duration_ms"], detail,
        extra={"action": f"job_{event.state}", **fields},
    )  # fmt: skip


def counted(outcome: Outcome) -> str:
    """The count an attempt ended by ``outcome`` adds to: its state, or for a job queued again
    ``retried`` (a failure's retry, which has its error) or ``rescheduled`` (a task's
    ``Retry``, no failure, has none), as the metrics tell them apart."""
    if outcome.state != "queued":
        return outcome.state
    return "retried" if outcome.error is not None else "rescheduled"


def _totals(events: WorkerEvents) -> dict[str, int]:
    c = events.counts
    return {"succeeded": c["succeeded"], "failed": c["failed"], "cancelled": c["cancelled"],
            "retried": c["retried"], "rescheduled": c["rescheduled"]}  # fmt: skip


def _log_summary(worker: Worker, delta: dict[str, int], interval: float) -> None:
    log.info(
        "last %.0f s: %s jobs finished (%s succeeded, %s failed, %s cancelled), %s retried,"
        " %s rescheduled; %s running", interval,
        delta["succeeded"] + delta["failed"] + delta["cancelled"], delta["succeeded"],
        delta["failed"], delta["cancelled"], delta["retried"], delta["rescheduled"],
        worker.running,
        extra={"action": "worker_summary", "worker": worker.name, "running": worker.running,
               **delta},
    )  # fmt: skip
