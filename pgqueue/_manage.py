"""Looking at single jobs from Python, and retrying finished ones (``PgQueue.cancel`` cancels).

Used by the integrations (Django admin actions, django.tasks results). Every function runs on
the caller's connection and never commits, like ``enqueue``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pgqueue import _ops, _store
from pgqueue._connections import SyncConnection, sync_cursor
from pgqueue._job import Job
from pgqueue._schema import require_schema_once


def get_job(conn: SyncConnection, job_id: int) -> Job | None:
    """The job ``job_id``, or ``None`` when there is no such job (or it was pruned)."""
    return _ops.get_job(conn, job_id)


def read_job(conn: SyncConnection, job_id: int) -> Job | None:
    """:func:`get_job` of a job just enqueued or running here: its schema is not checked
    (see :func:`pgqueue._ops.read_job`)."""
    return _ops.read_job(conn, job_id)


def retry_jobs(conn: SyncConnection, ids: Sequence[int]) -> list[int]:
    """Queue failed or cancelled jobs again (same ids, fresh attempts); returns those ids, in
    id order (the order they are locked in, as by ``pgqueue jobs retry --failed``)."""
    with sync_cursor(conn) as cur:
        require_schema_once(cur)
        return _store.run(cur, _store.jobs_retry(ids))
