"""What the operations API returns: a job, a queue's figures, a live worker. Plain data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Job:
    """A job as ``pgqueue.jobs`` shows it. ``result`` is ``None`` until it succeeds.

    ``errors`` holds one entry per failed attempt: ``attempt``, ``at``, ``error``, ``traceback``;
    the first and the last nine, the oldest of which says in ``dropped`` how many were left out.
    """

    id: int
    task: str
    queue: str
    state: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    last_error: str | None
    errors: list[dict[str, Any]]
    unique_key: str | None
    meta: dict[str, Any]
    worker_id: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool

    @property
    def is_finished(self) -> bool:
        """Whether the job reached a terminal state (succeeded, failed or cancelled)."""
        return self.state in TERMINAL_STATES


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One row of ``pgqueue.queue_stats``; ``scheduled`` jobs are part of ``queued``."""

    queue: str
    queued: int
    scheduled: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    oldest_runnable_age: float | None
    finished_per_minute: float
    estimated: bool = False
    """Whether ``succeeded``, ``failed`` and ``cancelled`` are estimates from a sample of a big
    history (``queue_stats(conn, exact=False)``, ``pgqueue stats`` without ``--exact``)."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One row of ``pgqueue.workers``: a worker process seen within its last heartbeats."""

    id: str
    hostname: str
    pid: int
    queues: dict[str, int]
    version: str
    started_at: datetime
    last_seen_at: datetime
    last_seen_ago: float
    running: int


for _cls in (Job, QueueStats, WorkerInfo):
    _cls.__module__ = "pgqueue"
