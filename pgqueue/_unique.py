"""Unique jobs: enqueue unless an active job holds the key, written once for sync and async.

A plan is a generator that yields the statements to run and receives their results, so the
sync and async shells only differ in how they execute a query.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Sequence
from typing import Any, TypeVar

import psycopg

from pgqueue import _store
from pgqueue._connections import commits_alone
from pgqueue._errors import DuplicateJob, PgQueueError, UniqueKeyContended
from pgqueue._options import OnConflict

# Each round ends unless the key's job finished between our two statements, so the loop only
# goes on while other jobs with this key keep being created and finished at that very moment.
MAX_ROUNDS = 20

T = TypeVar("T")
Plan = Generator[_store.Query[Any], Any, T]


def _plan(job: _store.NewJob, on_conflict: OnConflict) -> Plan[tuple[int, bool]]:
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


class _Batch:
    """enqueue_many's jobs with their keys, and the ids found for them so far."""

    __slots__ = ("args", "first", "ids", "keys", "kwargs", "saved", "template", "written")

    def __init__(
        self, template: _store.NewJob, args: Sequence[str], kwargs: Sequence[str],
        keys: Sequence[str | None],
    ) -> None:  # fmt: skip
        self.template, self.args, self.kwargs, self.keys = template, args, kwargs, keys
        self.first: dict[str, int] = {}  # where each key comes first: the job that goes in
        for i, key in enumerate(keys):
            if key is not None:
                self.first.setdefault(key, i)
        self.ids = [0] * len(keys)
        self.written = 0  # how many jobs the last round inserted
        self.saved = False  # whether the batch's savepoint is set (or being released)

    def sent(self) -> list[int]:
        """The jobs to insert: every job without a key, and each key's first."""
        return [i for i, key in enumerate(self.keys) if key is None or self.first[key] == i]

    def insert(self, todo: list[int]) -> _store.Query[list[_store.Row]]:
        return _store.jobs_insert_many_unique(
            self.template, [self.args[i] for i in todo], [self.kwargs[i] for i in todo],
            [self.keys[i] for i in todo],
        )  # fmt: skip

    def key(self, i: int) -> str:
        key = self.keys[i]
        assert key is not None
        return key

    def inserted(self, todo: list[int], rows: list[_store.Row]) -> list[int]:
        """Record the ids of ``todo``'s jobs that went in; returns those whose key was held.
        The jobs without a key went in, with ids in their order; else their places are not
        known, and the batch is refused."""
        self.written = len(rows)
        by_key = {key: job_id for job_id, key in rows if key is not None}
        unkeyed = sorted(job_id for job_id, key in rows if key is None)
        places = [i for i in todo if self.keys[i] is None]
        if len(unkeyed) != len(places):
            raise PgQueueError(
                f"enqueue_many: {len(places) - len(unkeyed)} of the batch's jobs without a"
                " unique_key did not go in (a BEFORE INSERT trigger on pgqueue.active_jobs"
                " returned NULL?): none of the batch's jobs was inserted"
            )
        for i, job_id in zip(places, unkeyed, strict=True):
            self.ids[i] = job_id
        held = []
        for i in todo:
            if (key := self.keys[i]) is not None:
                if key in by_key:
                    self.ids[i] = by_key[key]
                else:
                    held.append(i)
        return held

    def result(self) -> tuple[list[int], int]:
        """The ids in input order (a key's later jobs get its first job's), and how many jobs
        the batch wrote."""
        first = self.first
        ids = [self.ids[i if key is None else first[key]] for i, key in enumerate(self.keys)]
        return ids, self.written


def _many_rounds(batch: _Batch, on_conflict: OnConflict) -> Plan[None]:
    for _ in range(MAX_ROUNDS):
        todo = batch.sent()
        held = batch.inserted(todo, (yield batch.insert(todo)))
        if not held:
            return
        holders = yield _store.jobs_find_unique_many([batch.key(i) for i in held])
        freed = [i for i in held if batch.key(i) not in holders]  # finished in between
        for i in held:
            if (holder := holders.get(batch.key(i))) is not None:
                if on_conflict == "raise":
                    raise DuplicateJob(batch.key(i), holder)  # the first held, in input order
                batch.ids[i] = holder
        if not freed:
            return
        # Inserting the freed keys alone would take them after the batch's later keys, out of
        # key order, and deadlock with a batch holding one and waiting for another: take the
        # round back and insert the whole batch again, sorted.
        yield _store.savepoint_rollback()
    raise UniqueKeyContended(batch.key(freed[0]), MAX_ROUNDS)


def _many_plan(batch: _Batch, on_conflict: OnConflict) -> Plan[tuple[list[int], int]]:
    """Insert the batch in rounds (as :func:`_plan` one job) inside a savepoint, so that a
    round can be taken back, and DuplicateJob, UniqueKeyContended or jobs a trigger dropped
    leave nothing of the batch behind."""
    yield _store.savepoint_set()
    batch.saved = True  # not before: a take-back without the savepoint aborts the transaction
    try:
        yield from _many_rounds(batch, on_conflict)
    except PgQueueError:
        yield _store.savepoint_rollback()
        yield _store.savepoint_release()
        batch.saved = False
        raise
    yield _store.savepoint_release()
    batch.saved = False
    return batch.result()


def _interrupted(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], batch: _Batch) -> bool:
    """Whether ``batch``, interrupted between two statements (KeyboardInterrupt, a cancelled
    task), left its savepoint open in a transaction that can still commit: its jobs would
    commit with the caller's. A statement the interruption stopped aborted the transaction
    (psycopg cancels it in the server), and a broken connection is left as it is."""
    return batch.saved and cur.connection.info.transaction_status == _INTRANS


_INTRANS = psycopg.pq.TransactionStatus.INTRANS


def _run(cur: psycopg.Cursor[Any], plan: Plan[T]) -> T:
    result: Any = None
    try:
        while True:
            result = _store.run(cur, plan.send(result))
    except StopIteration as done:
        ended: T = done.value
        return ended


async def _arun(cur: psycopg.AsyncCursor[Any], plan: Plan[T]) -> T:
    result: Any = None
    try:
        while True:
            result = await _store.arun(cur, plan.send(result))
    except StopIteration as done:
        ended: T = done.value
        return ended


def enqueue(
    cur: psycopg.Cursor[Any], job: _store.NewJob, on_conflict: OnConflict
) -> tuple[int, bool]:
    """Run the plan on a sync cursor; returns the new or the existing job's id, and whether it
    is the existing one's."""
    return _run(cur, _plan(job, on_conflict))


async def aenqueue(
    cur: psycopg.AsyncCursor[Any], job: _store.NewJob, on_conflict: OnConflict
) -> tuple[int, bool]:
    """Async twin of :func:`enqueue`."""
    return await _arun(cur, _plan(job, on_conflict))


def enqueue_many(
    cur: psycopg.Cursor[Any], template: _store.NewJob, args: Sequence[str],
    kwargs: Sequence[str], keys: Sequence[str | None], on_conflict: OnConflict,
) -> tuple[list[int], int]:  # fmt: skip
    """Insert one job per (args, kwargs) with its key (or none), as :func:`enqueue` would one
    by one, in a few statements; returns the ids in input order, a key's jobs all with its
    job's id, and how many jobs went in. On an autocommit connection, in a transaction of its
    own: committed whole or not at all."""
    batch = _Batch(template, args, kwargs, keys)
    plan = _many_plan(batch, on_conflict)
    conn = cur.connection
    if commits_alone(conn):
        with conn.transaction():
            return _run(cur, plan)
    try:
        return _run(cur, plan)
    except BaseException:
        if _interrupted(cur, batch):
            # The caller's error, not this statement's, is the one to raise: if the savepoint
            # went with a RELEASE the interruption did not stop, this fails and aborts the
            # transaction, which then commits nothing either.
            with contextlib.suppress(psycopg.Error):
                _store.run(cur, _store.savepoint_abandon())
        raise


async def aenqueue_many(
    cur: psycopg.AsyncCursor[Any], template: _store.NewJob, args: Sequence[str],
    kwargs: Sequence[str], keys: Sequence[str | None], on_conflict: OnConflict,
) -> tuple[list[int], int]:  # fmt: skip
    """Async twin of :func:`enqueue_many`."""
    batch = _Batch(template, args, kwargs, keys)
    plan = _many_plan(batch, on_conflict)
    conn = cur.connection
    if commits_alone(conn):
        async with conn.transaction():
            return await _arun(cur, plan)
    try:
        return await _arun(cur, plan)
    except BaseException:
        if _interrupted(cur, batch):
            with contextlib.suppress(psycopg.Error):
                await _store.arun(cur, _store.savepoint_abandon())
        raise
