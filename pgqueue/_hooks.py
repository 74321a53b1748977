"""Extension points of an app: middleware around each attempt, enqueue-time metadata, and
the :class:`JobEvent` that per-task callbacks and worker listeners receive."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from pgqueue._worker._context import JobContext

Middleware = Callable[["JobContext", Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""``async def mw(job, call_next)``: runs around every attempt; returns what ``call_next()``
returned (or something else), or raises."""

MetaHook = Callable[[dict[str, Any]], dict[str, Any]]
"""Called at enqueue with the job's ``meta``; returns the ``meta`` to store."""

Callback = Callable[["JobEvent"], Any]
"""``on_success`` / ``on_failure``: a function or coroutine function taking a :class:`JobEvent`."""

ProcessWrap = Callable[[], AbstractContextManager[Any]]
"""What a process set-up may return: called before each job of its child, it makes the context
manager that job runs in."""

Ids = TypeVar("Ids", int, list[int])


class Sent(Protocol):
    """What an enqueue's span is told as it ends well: the new job's id (``enqueue``) or the
    batch's ids (``enqueue_many``), which it returns; for an enqueue with a ``unique_key``,
    ``existing`` says whether the id is that of a job found holding the key (nothing written),
    and for a batch with ``unique_keys``, ``written`` how many jobs it wrote (``None``: all)."""

    def __call__(
        self, ids: Ids, /, existing: bool | None = None, written: int | None = None
    ) -> Ids: ...


EnqueueSpan = Callable[[str, str, bool], AbstractContextManager[Sent]]
"""Called with the task's name, its queue and whether it is a batch (``enqueue_many``): a
context manager around the enqueue, its ``meta`` hooks and statements included."""


@dataclass(frozen=True, slots=True)
class JobEvent:
    """How one attempt ended, as workers report it to callbacks and listeners.

    ``state`` is ``succeeded``, ``failed`` (final), ``cancelled`` or ``retrying``.
    """

    job: JobContext
    state: str
    duration: float
    error: str | None = None
    traceback: str | None = None
    encoded_result: str | None = None

    @property
    def result(self) -> Any:
        """The task's return value (``None`` unless it succeeded and results are stored)."""
        return None if self.encoded_result is None else json.loads(self.encoded_result)

    @property
    def is_final(self) -> bool:
        """Whether the job will not run again."""
        return self.state != "retrying"


class AppHooks:
    """The middleware and enqueue hooks registered on one app."""

    def __init__(self) -> None:
        self.middleware: list[Middleware] = []
        self.enqueue_meta: list[MetaHook] = []
        # By task name: told of each job of that task a worker ended, once its last outcome
        # is written; the event says what was written (succeeded, failed, or cancelled, a
        # retry JOBS_ACK cancelled too, and a job stopped at shutdown that the release ended
        # cancelled, as asked while it ran). Run off the loop as on_success is: an integration
        # reading the row reads it ended (the Django tasks backend's task_finished).
        self.job_ended: dict[str, Callback] = {}
        # Set by pgqueue.tracing.instrument: the running attempt's trace context, as W3C
        # headers, which a process-pool child makes current around the task (None: not
        # traced, and no child imports OpenTelemetry).
        self.child_trace: Callable[[], dict[str, str]] | None = None
        self.enqueue_span: EnqueueSpan | None = None  # pgqueue.tracing's too

    def job_meta(self, meta: dict[str, Any] | None) -> dict[str, Any]:
        """The ``meta`` to store for a new job, after every enqueue hook."""
        result = dict(meta) if meta else {}
        for hook in self.enqueue_meta:
            result = hook(result)
        return result


async def call_through(
    middleware: list[Middleware], job: JobContext, call: Callable[[], Awaitable[Any]]
) -> Any:
    """Run ``call`` inside every middleware, the first registered outermost."""
    if not middleware:
        return await call()

    def step(index: int) -> Callable[[], Awaitable[Any]]:
        if index == len(middleware):
            return call
        return lambda: _awaitable(middleware[index], middleware[index](job, step(index + 1)))

    return await step(0)()


def _awaitable(mw: Middleware, returned: Any) -> Awaitable[Any]:
    """What ``mw`` returned, which its caller awaits; a clear error if it cannot be (a plain
    function that forgot to return ``call_next()``: Python's own error named no middleware)."""
    if not inspect.isawaitable(returned):
        raise TypeError(
            f"middleware {getattr(mw, '__qualname__', repr(mw))} returned"
            f" {type(returned).__name__}, not an awaitable: write it async def mw(job,"
            " call_next), returning await call_next()"
        )
    return returned


JobEvent.__module__ = "pgqueue"
