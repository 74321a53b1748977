"""Waiting for a job to finish: LISTEN for completion notifications, re-read the row.

The statement that moves jobs to finished_jobs notifies ``pgqueue_finished`` with their ids
(one notification per statement, see 0001_zz_functions.sql). A notification only says "look
again": the waiter re-reads the row, and polls every ``poll_interval`` seconds in case a
notification was lost. LISTEN starts before the first read, so no completion slips between.

Without ``listen`` (behind a transaction-mode pooler) the waiter only polls and keeps nothing
in its session: its registration (session advisory locks) and its LISTEN would stay with the
server connection the pooler lent it, and every statement that finishes jobs would notify.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._errors import JobStateError
from pgqueue._job import Job
from pgqueue._ops import aget_job, get_job
from pgqueue._options import check_job_id
from pgqueue._retry import is_finite, is_number, shown


def _mentions(payload: str, job_id: int) -> bool:
    return str(job_id) in payload.split(",")


def _check(job: Job | None, job_id: int) -> Job | None:
    if job is None:  # most often: waited on in the transaction that enqueued it
        raise JobStateError(
            f"there is no job {job_id}: never enqueued, pruned, or enqueued by a transaction"
            " that has not committed (wait after the commit)"
        )
    return job if job.is_finished else None


def _remaining(deadline: float | None, job_id: int, timeout: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
    return left


def _check_arguments(job_id: int, timeout: float | None, poll_interval: float) -> None:
    # A NaN timeout never expired and a poll_interval of 0 or less re-read the row in a loop.
    check_job_id(job_id)
    if timeout is not None and not (is_number(timeout) and timeout >= 0):
        raise ValueError(
            "timeout must be a number of seconds >= 0 (None or math.inf to wait for ever),"
            f" got {shown(timeout)}"
        )
    if not (is_number(poll_interval) and poll_interval > 0 and is_finite(poll_interval)):
        raise ValueError(
            f"poll_interval must be a finite number of seconds > 0, got {shown(poll_interval)}"
        )


def _deadline(timeout: float | None) -> float | None:
    """When to give up, on the monotonic clock; ``None`` for ever (no timeout, ``math.inf``,
    or an int past every float, which the clock's float arithmetic cannot take)."""
    return None if timeout is None or not is_finite(timeout) else time.monotonic() + timeout


def wait_sync(
    dsn: str, job_id: int, timeout: float | None, poll_interval: float, listen: bool = True
) -> Job:
    """Block until job ``job_id`` is finished; returns it. Raises ``TimeoutError``."""
    _check_arguments(job_id, timeout, poll_interval)
    deadline = _deadline(timeout)
    # Nothing prepared: behind a transaction-mode pooler the read psycopg prepares on its sixth
    # poll would be run by name on another server connection.
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
        _store.iso_dates(conn)
        if listen:
            with conn.cursor() as cur:
                _store.run(cur, _store.listen_finished())
        while (job := _check(get_job(conn, job_id), job_id)) is None:
            left = _remaining(deadline, job_id, timeout)
            _next_note(conn, job_id, poll_interval if left is None else min(left, poll_interval))
        return job


def _next_note(conn: psycopg.Connection[Any], job_id: int, seconds: float) -> None:
    for note in conn.notifies(timeout=seconds):
        if _mentions(note.payload, job_id):
            return


async def wait(
    dsn: str, job_id: int, timeout: float | None, poll_interval: float, listen: bool = True
) -> Job:
    """Async twin of :func:`wait_sync`."""
    _check_arguments(job_id, timeout, poll_interval)
    deadline = _deadline(timeout)
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, prepare_threshold=None
    ) as conn:
        await _store.aiso_dates(conn)
        if listen:
            async with conn.cursor() as cur:
                await _store.arun(cur, _store.listen_finished())
        while (job := _check(await aget_job(conn, job_id), job_id)) is None:
            left = _remaining(deadline, job_id, timeout)
            seconds = poll_interval if left is None else min(left, poll_interval)
            async for note in conn.notifies(timeout=seconds):
                if _mentions(note.payload, job_id):
                    break
        return job
