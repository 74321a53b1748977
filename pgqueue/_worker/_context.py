"""What a running task can know about its own job."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class JobContext:
    """The job a task is running for. Read it with :func:`pgqueue.current_job`."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    meta: dict[str, Any] = field(default_factory=dict)
    cancel_reason: str | None = None
    # Made on first use: most jobs finish without anyone looking (saves a lock per job).
    _cancelled: threading.Event | None = field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> threading.Event:
        """Set when the worker asks this attempt to stop; thread tasks may ``wait()`` on it.

        The worker creates it (on the event loop) before a thread task starts, so the task's
        thread and the loop always share one event.
        """
        if self._cancelled is None:
            self._cancelled = threading.Event()
        return self._cancelled

    @property
    def is_cancelled(self) -> bool:
        """True once the worker asked this attempt to stop (timeout, cancel, lost lease, shutdown).

        Thread tasks cannot be interrupted; long ones should check this between steps.
        """
        return self.cancelled.is_set()

    def cancel(self, reason: str) -> None:
        """Record why this attempt is being stopped (the first reason wins)."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancelled.set()


_current: ContextVar[JobContext] = ContextVar("pgqueue_current_job")


def current_job() -> JobContext:
    """The job the calling task runs for; raises ``LookupError`` outside a task."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError("pgqueue.current_job() was called outside a running task") from None


JobContext.__module__ = "pgqueue"
