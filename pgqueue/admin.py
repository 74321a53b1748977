"""Inspect and steer jobs from Python: the functions the ``pgqueue jobs``, ``stats``,
``workers``, ``prune`` and ``healthcheck`` commands call.

Each takes your connection (psycopg, or anything a registered adapter accepts) and never
commits; ``health_problem`` opens its own.
"""

from pgqueue._ops import (
    acancel_job,
    aget_job,
    cancel_job,
    count_prunable,
    count_retryable,
    get_job,
    health_problem,
    list_jobs,
    live_workers,
    prune,
    prune_by_state,
    queue_stats,
    retry_failed,
    retry_job,
)

__all__ = [
    "acancel_job",
    "aget_job",
    "cancel_job",
    "count_prunable",
    "count_retryable",
    "get_job",
    "health_problem",
    "list_jobs",
    "live_workers",
    "prune",
    "prune_by_state",
    "queue_stats",
    "retry_failed",
    "retry_job",
]
