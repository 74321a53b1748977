"""Looking at single jobs from Python, and retrying finished ones (``PgQueue.cancel`` cancels).

Used by the integrations (Django admin actions, django.tasks results). Every function runs on
the caller's connection and never commits, like ``enqueue``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqueue import _store
from pgqueue._connections import SyncConnection, sync_cursor


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One job as ``pgqueue.jobs`` shows it, JSON columns decoded."""

    id: int
    queue: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: str
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
    worker_id: str | None


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def get_job(conn: SyncConnection, job_id: int) -> JobInfo | None:
    """The job ``job_id``, or ``None`` when there is no such job (or it was pruned)."""
    with sync_cursor(conn) as cur:
        row = _store.run(cur, _store.jobs_get(job_id))
    if row is None:
        return None
    values = list(row)
    for index in (3, 4, 13, 15):  # args, kwargs, result, errors arrive as JSON text
        values[index] = _decode(values[index])
    return JobInfo(*values)


def retry_jobs(conn: SyncConnection, ids: Sequence[int]) -> list[int]:
    """Queue failed or cancelled jobs again (same ids, fresh attempts); returns those ids."""
    with sync_cursor(conn) as cur:
        return _store.run(cur, _store.jobs_retry(ids))
