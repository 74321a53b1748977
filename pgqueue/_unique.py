"""Unique jobs: enqueue unless an active job holds the key, written once for sync and async.

The plan is a generator that yields the statements to run and receives their results, so the
sync and async shells only differ in how they execute a query.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._errors import DuplicateJob, UniqueKeyContended
from pgqueue._options import OnConflict

# Each round ends unless the key's job finished between our two statements, so the loop only
# goes on while other jobs with this key keep being created and finished at that very moment.
MAX_ROUNDS = 20

Plan = Generator[_store.Query[Any], Any, tuple[int, bool]]


def _plan(job: _store.NewJob, on_conflict: OnConflict) -> Plan:
    assert job.unique_key is not None
    for _ in range(MAX_ROUNDS):
        # If the holder's transaction is still open, this waits for it: on commit we get
        # nothing and find its row below; on rollback our row goes in.
        new_id = yield _store.jobs_insert_unique(job)
        if new_id is not None:
            return int(new_id), False
        existing = yield _store.jobs_find_unique(job.unique_key)
        if existing is not None:
            if on_conflict == "raise":
                raise DuplicateJob(job.unique_key, existing)
            return int(existing), True
        # The holder finished (or rolled back) in between: the key is free, try again.
    raise UniqueKeyContended(job.unique_key, MAX_ROUNDS)


def enqueue(
    cur: psycopg.Cursor[Any], job: _store.NewJob, on_conflict: OnConflict
) -> tuple[int, bool]:
    """Run the plan on a sync cursor; returns the new or the existing job's id, and whether it
    is the existing one's."""
    plan = _plan(job, on_conflict)
    result: Any = None
    try:
        while True:
            result = _store.run(cur, plan.send(result))
    except StopIteration as done:
        ended: tuple[int, bool] = done.value
        return ended


async def aenqueue(
    cur: psycopg.AsyncCursor[Any], job: _store.NewJob, on_conflict: OnConflict
) -> tuple[int, bool]:
    """Async twin of :func:`enqueue`."""
    plan = _plan(job, on_conflict)
    result: Any = None
    try:
        while True:
            result = await _store.arun(cur, plan.send(result))
    except StopIteration as done:
        ended: tuple[int, bool] = done.value
        return ended
